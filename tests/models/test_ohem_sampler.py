"""OHEMPixelSampler by hand, wired through a decode head's `sampler=`; losses summed by `loss_name`."""

from __future__ import annotations

import pytest
import torch

from segaccel.models import CrossEntropyLoss, OHEMPixelSampler
from segaccel.models.heads.decode_head import BaseDecodeHead
from segaccel.structures import PixelData, SegDataSample


class IdentityHead(BaseDecodeHead):
    """A head whose logits are its input, to test the loss plumbing alone."""

    def forward(self, inputs):
        return inputs[self.in_index]


def logits_of(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs).log().T.reshape(1, len(probs[0]), 1, len(probs))


# true-class probabilities 0.9, 0.5, 0.8, 0.3 and one ignored pixel
PROBS = [[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.7, 0.3], [0.5, 0.5]]
LABEL = torch.tensor([[[0, 0, 1, 1, 255]]])


def head(**kwargs) -> IdentityHead:
    return IdentityHead(2, 2, num_classes=2, in_index=0, dropout_ratio=0.0, **kwargs)


@pytest.mark.parametrize(
    ("thresh", "expected"),
    [
        (0.7, [0, 1, 0, 1, 0]),  # 2nd smallest kept prob 0.8 > thresh: threshold 0.8
        (0.85, [0, 1, 1, 1, 0]),  # thresh above it: every pixel under 0.85
        (None, [0, 1, 0, 1, 0]),  # no thresh: the min_kept largest losses
    ],
)
def test_ohem_picks_the_hard_pixels(thresh, expected):
    sampler = OHEMPixelSampler(head(), thresh=thresh, min_kept=2)
    weight = sampler.sample(logits_of(PROBS), LABEL.unsqueeze(1))
    assert weight.tolist() == [[expected]]


def test_ohem_through_the_head_weights_the_loss():
    h = head(sampler={"type": "OHEMPixelSampler", "thresh": 0.7, "min_kept": 2})
    assert isinstance(h.sampler, OHEMPixelSampler) and h.sampler.context is h
    logits = logits_of(PROBS)
    losses = h.loss_by_feat(logits, [SegDataSample(gt_sem_seg=PixelData(LABEL))])
    # CE over the kept pixels (probabilities 0.5 and 0.3), divided by all 5 pixels (avg_non_ignore=False)
    expected = -(torch.tensor(0.5).log() + torch.tensor(0.3).log()) / 5
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert "sampler" not in dict(h.named_modules())  # not a module: no weights, no recursion
    with pytest.raises(ValueError, match="min_kept"):
        OHEMPixelSampler(h, min_kept=1)


def test_losses_with_the_same_name_are_summed():
    logits = logits_of(PROBS)
    samples = [SegDataSample(gt_sem_seg=PixelData(LABEL))]
    single = head().loss_by_feat(logits, samples)
    several = head(
        loss_decode=[
            {"type": "CrossEntropyLoss", "loss_weight": 1.0},
            {"type": "CrossEntropyLoss", "loss_weight": 0.5},
            {"type": "DiceLoss", "loss_weight": 2.0},
        ]
    ).loss_by_feat(logits, samples)
    assert set(several) == {"loss_ce", "loss_dice", "acc_seg"}
    assert several["loss_ce"].item() == pytest.approx(1.5 * single["loss_ce"].item(), rel=1e-6)
    assert several["acc_seg"].item() == pytest.approx(75.0)  # right at pixels 0, 1 (a tie → 0) and 2 of 4


def test_class_weight_with_ignored_pixels_does_not_crash():
    """MMSegmentation indexes class_weight with the ignore label; ours never does."""
    logits = logits_of(PROBS)
    ce = CrossEntropyLoss(class_weight=[1.0, 3.0], avg_non_ignore=True)
    value = ce(logits, LABEL.squeeze(0).unsqueeze(0), ignore_index=255)
    p = torch.tensor([0.9, 0.5, 0.8, 0.3])
    w = torch.tensor([1.0, 1.0, 3.0, 3.0])
    assert value.item() == pytest.approx((-(p.log()) * w).sum().item() / w.sum().item(), rel=1e-5)
