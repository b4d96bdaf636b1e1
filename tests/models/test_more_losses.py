"""DiceLoss, FocalLoss, LovaszLoss, TverskyLoss: values by hand and MMSegmentation's reference values."""

from __future__ import annotations

import math

import pytest
import torch

from segaccel.models import DiceLoss, FocalLoss, LovaszLoss, TverskyLoss
from segaccel.registry import MODELS


def logits_of(probs: list[list[float]]) -> torch.Tensor:
    """Logits `(1, C, 1, P)` whose softmax over C gives `probs` (one row per pixel)."""
    return torch.tensor(probs).log().T.reshape(1, len(probs[0]), 1, len(probs))


# --- Dice ------------------------------------------------------------------------------------------
def test_dice_by_hand_both_forms():
    # probabilities (activate=False), 2 classes, pixels labelled 0 and 1
    pred = torch.tensor([[[[0.8, 0.4]], [[0.2, 0.6]]]])
    label = torch.tensor([[[0, 1]]])
    # a = 0.8 + 0.6; naive: 1 - 2a / (Σp + Σt) = 1 - 2.8 / 4; squared: 1 - 2.8 / (1.2 + 2)
    naive = DiceLoss(activate=False, naive_dice=True, eps=0.0)(pred, label)
    squared = DiceLoss(activate=False, eps=0.0)(pred, label)
    assert naive.item() == pytest.approx(0.3)
    assert squared.item() == pytest.approx(0.125)
    assert DiceLoss(activate=False)(pred, label).item() == pytest.approx(1 - 2.8 / (1.2 + 2 + 2e-3))


def test_dice_leaves_unlabelled_pixels_out_and_drops_an_ignored_class():
    pred = torch.tensor([[[[0.8, 0.4, 0.9]], [[0.2, 0.6, 0.1]]]])
    label = torch.tensor([[[0, 1, 255]]])
    assert DiceLoss(activate=False, eps=0.0)(pred, label).item() == pytest.approx(0.125)
    # ignore_index=0 is a class: its channel leaves the sums → 1 - 2·0.6 / (0.36 + 0.04 + 1)
    loss = DiceLoss(activate=False, eps=0.0, ignore_index=0)(pred, label)
    assert loss.item() == pytest.approx(1 - 1.2 / 1.4)


def test_dice_activations_reduction_and_weights():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5, 6)
    label = torch.randint(0, 4, (3, 5, 6))
    per_image = DiceLoss(reduction="none")(logits, label)
    assert per_image.shape == (3,)
    torch.testing.assert_close(per_image, DiceLoss(activate=False, reduction="none")(logits.sigmoid(), label))
    torch.testing.assert_close(
        DiceLoss(use_sigmoid=False, reduction="none")(logits, label),
        DiceLoss(activate=False, reduction="none")(logits.softmax(1), label),
    )
    assert DiceLoss()(logits, label).item() == pytest.approx(per_image.mean().item(), rel=1e-6)
    assert DiceLoss(reduction="sum", loss_weight=2.0)(logits, label).item() == pytest.approx(
        2 * per_image.sum().item(), rel=1e-6
    )
    w = torch.tensor([1.0, 0.0, 2.0])
    assert DiceLoss()(logits, label, weight=w).item() == pytest.approx(
        (per_image * w).mean().item(), rel=1e-6
    )
    # a per-pixel 0/1 weight (OHEM) is the same as labelling the dropped pixels 255
    keep = torch.rand(3, 5, 6) > 0.5
    torch.testing.assert_close(
        DiceLoss()(logits, label, weight=keep.float()), DiceLoss()(logits, label.masked_fill(~keep, 255))
    )
    # targets shaped like the prediction are used as they are
    one_hot = torch.nn.functional.one_hot(label, 4).permute(0, 3, 1, 2)
    torch.testing.assert_close(DiceLoss()(logits, one_hot), DiceLoss()(logits, label))


def test_dice_binary_one_channel_takes_label_one_as_foreground():
    pred = torch.tensor([[[[0.9, 0.2, 0.7]]]])  # probabilities of the foreground
    label = torch.tensor([[[1, 0, 255]]])
    # Σp·t = 0.9, Σp² = 0.81 + 0.04, Σt² = 1
    assert DiceLoss(activate=False, eps=0.0)(pred, label).item() == pytest.approx(1 - 1.8 / 1.85)


# --- Focal -----------------------------------------------------------------------------------------
# MMSegmentation's tests/test_models/test_losses/test_focal_loss.py::test_same: inputs and the first
# reference result (reduction none, per-element weight, class_weight, integer labels, alpha 0.4 per
# class, ignore_index 255).
FOCAL_PRED = torch.tensor(
    [
        [
            [[0.1998772621, 0.3659250736], [0.9128918052, 0.2723454833]],
            [[0.1373604536, 0.2495964766], [0.9785252810, 0.5094971061]],
            [[0.2959728837, 0.8378278613], [0.5674484372, 0.3124643564]],
        ],
        [
            [[0.2381041050, 0.8065491915], [0.2052971125, 0.9496635199]],
            [[0.2494341135, 0.9726386070], [0.9316667318, 0.2813754082]],
            [[0.2399672866, 0.3493354321], [0.9550838470, 0.8279340863]],
        ],
    ]
)
FOCAL_TARGET = torch.tensor([[[2, 2], [1, 2]], [[0, 1], [2, 0]]])
FOCAL_WEIGHT = torch.tensor(
    [
        [0.4118, 0.0461, 0.9419],
        [0.4523, 0.8014, 0.4209],
        [0.3738, 0.7583, 0.2685],
        [0.4707, 0.9720, 0.3626],
        [0.2771, 0.2611, 0.4687],
        [0.2841, 0.7127, 0.7278],
        [0.4920, 0.2341, 0.7262],
        [0.2499, 0.4702, 0.9717],
    ]
)
FOCAL_CLASS_WEIGHT = [0.052917540073394775, 0.27414458990097046, 0.5211336612701416]
FOCAL_EXPECTED = torch.tensor(
    [
        [
            [[3.154235659167e-03, 4.470038227737e-03], [7.556425873190e-03, 4.038503859192e-03]],
            [[1.654161140323e-03, 3.438753634691e-02], [1.980140106753e-03, 6.114346906543e-02]],
            [[1.986406743526e-02, 2.876800950617e-03], [3.475922346115e-02, 7.408759556711e-03]],
        ],
        [
            [[6.621975335293e-04, 5.068928934634e-03], [3.801103215665e-03, 1.346173667116e-04]],
            [[1.120079588145e-02, 1.886526471935e-03], [2.504604868591e-02, 2.119205333292e-02]],
            [[3.766115009785e-02, 6.910999864340e-02], [3.804825479165e-03, 1.751711219549e-01]],
        ],
    ]
)


def test_focal_matches_mmsegmentation_reference_values():
    focal = FocalLoss(alpha=[0.4] * 3, class_weight=FOCAL_CLASS_WEIGHT)
    out = focal(FOCAL_PRED, FOCAL_TARGET, weight=FOCAL_WEIGHT, ignore_index=255, reduction_override="none")
    torch.testing.assert_close(out, FOCAL_EXPECTED, rtol=1e-5, atol=1e-8)
    one_hot = torch.nn.functional.one_hot(FOCAL_TARGET, 3).permute(0, 3, 1, 2)
    out_one_hot = focal(FOCAL_PRED, one_hot, weight=FOCAL_WEIGHT, reduction_override="none")
    torch.testing.assert_close(out_one_hot, FOCAL_EXPECTED, rtol=1e-5, atol=1e-8)
    mean = focal(FOCAL_PRED, FOCAL_TARGET, weight=FOCAL_WEIGHT)
    assert mean.item() == pytest.approx(FOCAL_EXPECTED.mean().item(), rel=1e-5)
    # a scalar alpha equals the same alpha for every class
    assert FocalLoss(alpha=0.4)(FOCAL_PRED, FOCAL_TARGET).item() == pytest.approx(
        FocalLoss(alpha=[0.4] * 3)(FOCAL_PRED, FOCAL_TARGET).item(), rel=1e-6
    )


def test_focal_by_hand_and_ignored_pixels():
    pred = torch.tensor([[[[0.0, 2.0]]]])  # binary, one channel: logits of two pixels
    label = torch.tensor([[[1, 255]]])
    # pixel 0: BCE(0, 1) = log 2, p = 0.5, focal weight = alpha · (1 - 0.5)^2 = 0.5 · 0.25
    expected = math.log(2) * 0.125
    out = FocalLoss(reduction="none")(pred, label)
    assert out[0, 0, 0, 0].item() == pytest.approx(expected) and out[0, 0, 0, 1].item() == 0.0
    assert FocalLoss()(pred, label).item() == pytest.approx(expected / 2)  # mean over every element
    with pytest.raises(ValueError, match="labels must lie"):
        FocalLoss()(torch.zeros(1, 3, 1, 1), torch.tensor([[[7]]]))
    with pytest.raises(ValueError, match="sigmoid"):
        FocalLoss(use_sigmoid=False)


# --- Lovász ----------------------------------------------------------------------------------------
def test_lovasz_hinge_by_hand():
    logits = torch.tensor([[[[0.5, 0.5, 3.0]]]])  # (1, 1, 1, 3); the third pixel is ignored
    label = torch.tensor([[[1, 0, 255]]])
    # errors 1 - s·logit = [0.5, 1.5]; sorted [1.5 (bg), 0.5 (fg)]; Lovász gradient [0.5, 0.5] → 1.0
    loss = LovaszLoss(loss_type="binary", reduction="none")(logits, label)
    assert loss.item() == pytest.approx(1.0)


def test_lovasz_softmax_by_hand():
    pred = logits_of([[0.7, 0.3], [0.4, 0.6], [0.1, 0.9]])
    label = torch.tensor([[[0, 1, 255]]])
    # class 0: errors [0.3, 0.4] → 0.5·0.4 + 0.5·0.3 = 0.35; class 1: errors [0.3, 0.4] → 1·0.4 = 0.4
    loss = LovaszLoss(reduction="none")(pred, label)
    assert loss.item() == pytest.approx(0.375, rel=1e-6)
    weighted = LovaszLoss(reduction="none", class_weight=[1.0, 3.0])(pred, label)
    assert weighted.item() == pytest.approx((0.35 + 1.2) / 2, rel=1e-6)
    # 'present' skips class 2 (never labelled); 'all' averages its zero loss in
    pred3 = logits_of([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]])
    label3 = torch.tensor([[[0, 1]]])
    present = LovaszLoss(reduction="none")(pred3, label3).item()
    every = LovaszLoss(reduction="none", classes="all")(pred3, label3).item()
    only0 = LovaszLoss(reduction="none", classes=[0])(pred3, label3).item()
    assert every != present and only0 == pytest.approx(0.5 * 0.3 + 0.5 * 0.3, rel=1e-6)


def test_lovasz_per_image_and_config_rules():
    torch.manual_seed(0)
    pred = torch.randn(2, 3, 4, 5, requires_grad=True)
    label = torch.randint(0, 3, (2, 4, 5))
    per_image = LovaszLoss(per_image=True, reduction="none")(pred, label)
    singles = [LovaszLoss(reduction="none")(pred[i : i + 1], label[i : i + 1]) for i in range(2)]
    torch.testing.assert_close(per_image, torch.stack(singles))
    mean = LovaszLoss(per_image=True)(pred, label)
    assert mean.item() == pytest.approx(per_image.mean().item())
    mean.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="reduction='none'"):
        LovaszLoss()
    with pytest.raises(ValueError, match="loss_type"):
        LovaszLoss(loss_type="Binary", reduction="none")


# --- Tversky ---------------------------------------------------------------------------------------
def test_tversky_by_hand():
    pred = logits_of([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
    label = torch.tensor([[[0, 1, 255]]])
    # class 0: TP 0.7, FP 0.4, FN 0.3; class 1: TP 0.6, FP 0.3, FN 0.4 (smooth 1, alpha 0.3, beta 0.7)
    t0 = 1.7 / (0.7 + 0.3 * 0.4 + 0.7 * 0.3 + 1)
    t1 = 1.6 / (0.6 + 0.3 * 0.3 + 0.7 * 0.4 + 1)
    assert TverskyLoss()(pred, label).item() == pytest.approx(((1 - t0) + (1 - t1)) / 2, rel=1e-6)
    focal = TverskyLoss(gamma=2.0, class_weight=[1.0, 2.0])(pred, label)
    assert focal.item() == pytest.approx(((1 - t0) ** 2 + 2 * (1 - t1) ** 2) / 2, rel=1e-6)
    # ignore_index=0 is a class: its term is skipped, the sum is still divided by both classes
    assert TverskyLoss(ignore_index=0)(pred, label).item() == pytest.approx(
        (1 - 1.6 / (0.6 + 0.7 * 0.4 + 1)) / 2, rel=1e-6
    )
    with pytest.raises(ValueError, match="alpha \\+ beta"):
        TverskyLoss(alpha=0.5, beta=0.7)


# --- several losses per head -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg",
    [
        {"type": "DiceLoss", "loss_weight": 3.0},
        {"type": "FocalLoss", "gamma": 3.0, "alpha": [0.1, 0.2, 0.3, 0.4]},
        {"type": "LovaszLoss", "reduction": "none"},
        {"type": "TverskyLoss", "alpha": 0.5, "beta": 0.5},
    ],
)
def test_every_loss_builds_from_config_and_backpropagates(cfg):
    torch.manual_seed(0)
    loss = MODELS.build(cfg)
    pred = torch.randn(2, 4, 6, 7, requires_grad=True)
    label = torch.randint(0, 4, (2, 6, 7))
    label[0, :2] = 255
    value = loss(pred, label, ignore_index=255)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert loss.loss_name.startswith("loss_")
