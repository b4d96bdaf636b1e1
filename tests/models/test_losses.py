"""CrossEntropyLoss (softmax and sigmoid) and accuracy against MMSegmentation's known values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segaccel.models.losses.accuracy import accuracy, label_accuracy
from segaccel.models.losses.cross_entropy_loss import CrossEntropyLoss
from segaccel.registry import MODELS

if "CrossEntropyLoss" not in MODELS:
    MODELS.register(CrossEntropyLoss)


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_simple_case_known_values(avg_non_ignore):
    """MMSegmentation's test_ce_loss: logits [[100, -100]], label 1 → 200 (softmax), 100 (sigmoid)."""
    pred, label = torch.tensor([[100.0, -100.0]]), torch.tensor([1])
    assert CrossEntropyLoss(avg_non_ignore=avg_non_ignore)(pred, label).item() == pytest.approx(200.0)
    sigmoid = CrossEntropyLoss(use_sigmoid=True, avg_non_ignore=avg_non_ignore)
    assert sigmoid(pred, label).item() == pytest.approx(100.0)


def test_constant_logits_known_values():
    """MMSegmentation's values for logits 0.5 everywhere, 21 classes, label 1."""
    pred = torch.full((2, 21, 8, 8), 0.5)
    label = torch.ones(2, 8, 8, dtype=torch.long)
    bce = CrossEntropyLoss(use_sigmoid=True)
    ce = CrossEntropyLoss()
    assert bce(pred, label).item() == pytest.approx(0.9503, abs=1e-4)
    assert ce(pred, label).item() == pytest.approx(math.log(21), rel=1e-6)
    label[:, 0, 0] = 255  # 2 of 128 pixels ignored
    assert bce(pred, label, ignore_index=255).item() == pytest.approx(0.9354, abs=1e-4)
    assert ce(pred, label).item() == pytest.approx(math.log(21) * 126 / 128, rel=1e-6)
    assert CrossEntropyLoss(avg_non_ignore=True)(pred, label).item() == pytest.approx(math.log(21), rel=1e-6)
    assert CrossEntropyLoss(use_sigmoid=True, avg_non_ignore=True)(pred, label).item() == pytest.approx(
        0.9503, abs=1e-4
    )


def test_avg_non_ignore_denominators():
    torch.manual_seed(0)
    pred = torch.randn(2, 5, 6, 7)
    label = torch.randint(0, 5, (2, 6, 7))
    label[0, :2] = 255
    summed = F.cross_entropy(pred, label, ignore_index=255, reduction="sum")
    num_valid = int((label != 255).sum())
    assert num_valid == 84 - 14
    assert CrossEntropyLoss()(pred, label).item() == pytest.approx(summed.item() / 84, rel=1e-6)
    assert CrossEntropyLoss(avg_non_ignore=True)(pred, label).item() == pytest.approx(
        summed.item() / num_valid, rel=1e-6
    )
    torch.testing.assert_close(
        CrossEntropyLoss(avg_non_ignore=True)(pred, label), F.cross_entropy(pred, label, ignore_index=255)
    )


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_class_weight(avg_non_ignore):
    # MMSegmentation 1.x divides by the summed class weights of the labels: 0.2 * 200 / 0.2
    pred, label = torch.tensor([[100.0, -100.0]]), torch.tensor([1])
    loss = CrossEntropyLoss(class_weight=[0.8, 0.2], avg_non_ignore=avg_non_ignore)(pred, label)
    assert loss.item() == pytest.approx(200.0)
    # without ignored pixels both settings are PyTorch's weighted mean
    torch.manual_seed(0)
    pred, label = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    weights = [0.3, 1.0, 2.5]
    expected = F.cross_entropy(pred, label, weight=torch.tensor(weights))
    loss = CrossEntropyLoss(class_weight=weights, avg_non_ignore=avg_non_ignore)(pred, label)
    torch.testing.assert_close(loss, expected)
    # by hand: 3 pixels, labels 0, 1, 1
    pred = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    label = torch.tensor([0, 1, 1])
    nll = [math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1)), math.log(2)]
    by_hand = (0.5 * nll[0] + 2.0 * nll[1] + 2.0 * nll[2]) / (0.5 + 2.0 + 2.0)
    loss = CrossEntropyLoss(class_weight=[0.5, 2.0], avg_non_ignore=avg_non_ignore)(pred, label)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)


@pytest.mark.parametrize("use_sigmoid", [False, True])
def test_class_weight_with_ignored_pixels(use_sigmoid):
    torch.manual_seed(0)
    pred = torch.randn(2, 4, 5, 6)
    label = torch.randint(0, 4, (2, 5, 6))
    label[1, 2:] = 255
    weights = [0.5, 1.0, 2.0, 4.0]
    loss = CrossEntropyLoss(use_sigmoid=use_sigmoid, class_weight=weights)(pred, label)
    loss_valid = CrossEntropyLoss(use_sigmoid=use_sigmoid, class_weight=weights, avg_non_ignore=True)(
        pred, label
    )
    w = torch.tensor(weights)
    valid = label != 255
    if use_sigmoid:
        target = F.one_hot(label.clamp(max=3), 4).permute(0, 3, 1, 2).float()
        elementwise = F.binary_cross_entropy_with_logits(
            pred, target, pos_weight=w.view(4, 1, 1), reduction="none"
        )
        summed = (elementwise * valid.unsqueeze(1)).sum()
        assert loss.item() == pytest.approx(summed.item() / pred.numel(), rel=1e-5)
        assert loss_valid.item() == pytest.approx(summed.item() / (4 * int(valid.sum())), rel=1e-5)
    else:
        summed = F.cross_entropy(pred, label, weight=w, ignore_index=255, reduction="sum")
        # ignored pixels (label 255, no class) count with weight 1, valid ones with their class weight
        weight_sum = w[label[valid]].sum() + int((~valid).sum())
        assert loss.item() == pytest.approx(summed.item() / weight_sum.item(), rel=1e-5)
        torch.testing.assert_close(loss_valid, F.cross_entropy(pred, label, weight=w, ignore_index=255))


def test_class_weight_with_an_ignore_label_that_is_a_class():
    """MMSegmentation's formula where it is defined: the ignored pixels weigh class_weight[ignore_index]."""
    torch.manual_seed(1)
    pred, label = torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 4, 4))
    w = torch.tensor([0.5, 1.5, 3.0])
    summed = F.cross_entropy(pred, label, weight=w, ignore_index=0, reduction="sum")
    loss = CrossEntropyLoss(class_weight=w.tolist())(pred, label, ignore_index=0)
    assert loss.item() == pytest.approx(summed.item() / w[label].sum().item(), rel=1e-6)


def test_loss_weight_reduction_and_pixel_weight():
    torch.manual_seed(0)
    pred = torch.randn(2, 3, 4, 5)
    label = torch.randint(0, 3, (2, 4, 5))
    label[0, 0, 0] = 255
    base = CrossEntropyLoss()(pred, label)
    assert CrossEntropyLoss(loss_weight=0.4)(pred, label).item() == pytest.approx(0.4 * base.item(), rel=1e-6)
    per_pixel = CrossEntropyLoss(reduction="none")(pred, label)
    assert per_pixel.shape == (2, 4, 5) and per_pixel[0, 0, 0] == 0
    torch.testing.assert_close(per_pixel, F.cross_entropy(pred, label, ignore_index=255, reduction="none"))
    assert CrossEntropyLoss(reduction="sum")(pred, label).item() == pytest.approx(
        per_pixel.sum().item(), rel=1e-6
    )
    assert CrossEntropyLoss()(pred, label, reduction_override="sum").item() == pytest.approx(
        per_pixel.sum().item(), rel=1e-6
    )
    weight = torch.rand(2, 4, 5)
    weighted = CrossEntropyLoss()(pred, label, weight=weight)
    assert weighted.item() == pytest.approx((per_pixel * weight).sum().item() / 40, rel=1e-6)


def test_all_ignored_gives_zero_not_nan():
    pred = torch.randn(1, 3, 2, 2, requires_grad=True)
    label = torch.full((1, 2, 2), 255)
    for use_sigmoid in (False, True):
        loss = CrossEntropyLoss(use_sigmoid=use_sigmoid, avg_non_ignore=True)(pred, label)
        assert loss.item() == 0.0
        loss.backward()


def test_binary_one_channel_prediction():
    pred = torch.tensor([[[[0.0, 2.0, -1.0]]]])  # (1, 1, 1, 3)
    label = torch.tensor([[[1, 255, 0]]])
    expected = math.log(2) + math.log(1 + math.exp(-1))  # BCE(0, 1) + BCE(-1, 0)
    assert CrossEntropyLoss(use_sigmoid=True)(pred, label).item() == pytest.approx(expected / 3, rel=1e-6)
    with_valid = CrossEntropyLoss(use_sigmoid=True, avg_non_ignore=True)(pred, label)
    assert with_valid.item() == pytest.approx(expected / 2, rel=1e-6)
    pos = CrossEntropyLoss(use_sigmoid=True, class_weight=[3.0])(pred, label)  # pos_weight on label 1
    assert pos.item() == pytest.approx((3 * math.log(2) + math.log(1 + math.exp(-1))) / 3, rel=1e-6)


def test_config_and_errors():
    loss = MODELS.build({"type": "CrossEntropyLoss", "loss_name": "loss_aux_ce", "avg_non_ignore": True})
    assert loss.loss_name == "loss_aux_ce" and loss.avg_non_ignore
    assert "avg_non_ignore=True" in repr(loss)
    assert (
        CrossEntropyLoss(class_weight=[1.0, 2.0]).state_dict() == {}
    )  # the weight is not a checkpoint entry
    with pytest.raises(ValueError, match="2 entries"):
        CrossEntropyLoss(class_weight=[1.0, 2.0])(
            torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)
        )
    with pytest.raises(TypeError, match="class_weight"):
        CrossEntropyLoss(class_weight="weights.npy")
    with pytest.raises(ValueError, match="reduction"):
        CrossEntropyLoss(reduction="avg")


def test_accuracy_by_hand():
    # scores (1, 3, 2, 3): argmax [[0, 2, 2], [1, 1, 1]]; right at (0, 0), (0, 2), (1, 1) with scores 3, 4, 3
    pred = torch.tensor(
        [
            [
                [[3.0, 1.0, 0.0], [0.0, 0.0, 0.5]],
                [[2.0, 0.0, 1.0], [3.0, 3.0, 3.0]],
                [[0.0, 2.0, 4.0], [0.0, 0.0, 0.0]],
            ]
        ]
    )
    target = torch.tensor([[[0, 1, 2], [255, 1, 0]]])
    assert accuracy(pred, target).item() == pytest.approx(60.0)  # 3 of 5 labelled pixels
    top1, top2 = accuracy(pred, target, topk=(1, 2))
    assert top1.item() == pytest.approx(60.0) and top2.item() == pytest.approx(80.0)  # (1, 2): label 0 is 2nd
    assert accuracy(pred, target, thresh=3.5).item() == pytest.approx(20.0)  # only (0, 2) scores above 3.5
    assert accuracy(pred, target, ignore_index=None).item() == pytest.approx(50.0)  # 3 of 6
    assert accuracy(pred, torch.full_like(target, 255)).item() == 0.0
    assert accuracy(pred, target).dim() == 0
    assert label_accuracy(pred.argmax(1), target).item() == pytest.approx(60.0)
    with pytest.raises(ValueError, match="topk=4"):
        accuracy(pred, target, topk=4)
