"""Tversky loss (Salehi et al., 2017), as MMSegmentation's `TverskyLoss`.

On softmax probabilities, per class c (the class `ignore_index` skipped) and per image:
`TI = (TP + smooth) / (TP + α·FP + β·FN + smooth)` over the labelled pixels, loss `(1 - TI)^γ`
averaged over the batch; the classes' losses (times `class_weight`) are summed and divided by the
number of classes (all of them, as MMSegmentation). `α = β = 0.5` is the Dice loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segaccel.models.losses.dice_loss import one_hot_with_valid
from segaccel.models.losses.utils import check_class_weight


class TverskyLoss(nn.Module):
    """Tversky loss of logits `(N, C, H, W)` against labels `(N, H, W)`.

    Args:
        smooth: added to numerator and denominator.
        class_weight: one weight per class.
        loss_weight: factor on the result.
        ignore_index: label left out; when it is a class, that class's term is skipped too.
        alpha, beta: weights of false positives and false negatives (`alpha + beta == 1`).
        gamma: focal exponent (>= 1).
        loss_name: key of this loss in the loss dict.
    """

    def __init__(
        self,
        smooth: float = 1.0,
        class_weight: Sequence[float] | None = None,
        loss_weight: float = 1.0,
        ignore_index: int = 255,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 1.0,
        loss_name: str = "loss_tversky",
    ) -> None:
        super().__init__()
        if abs(alpha + beta - 1.0) > 1e-6:
            raise ValueError(f"TverskyLoss: alpha + beta must be 1.0, got {alpha} + {beta}")
        if gamma < 1.0:
            raise ValueError(f"TverskyLoss: gamma must be at least 1.0, got {gamma}")
        self.smooth = smooth
        self.class_weight = check_class_weight(class_weight, "TverskyLoss")
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
        ignore_index: int | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        """`weight` `(N, H, W)` multiplies each pixel's contribution (OHEM's 0/1 mask).

        `ignore_index` (the head's) is left out too when given; other keyword arguments of the common
        loss interface (`avg_factor`, `reduction_override`) do not apply and are ignored, as in
        MMSegmentation.
        """
        num_classes = pred.shape[1]
        probs = pred.softmax(dim=1)
        one_hot, valid = one_hot_with_valid(pred, target, "TverskyLoss")
        valid = valid & (target != self.ignore_index)
        if ignore_index is not None:
            valid = valid & (target != ignore_index)
        mask = valid.to(pred.dtype)
        if weight is not None:
            mask = mask * weight.reshape(target.shape).to(pred.dtype)
        mask = mask.flatten(1)
        total = pred.new_zeros(())
        for c in range(num_classes):
            if c == self.ignore_index:
                continue
            p, t = probs[:, c].flatten(1), one_hot[:, c].flatten(1)
            tp = (p * t * mask).sum(1)
            fp = (p * (1 - t) * mask).sum(1)
            fn = ((1 - p) * t * mask).sum(1)
            tversky = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
            loss = ((1 - tversky) ** self.gamma).mean()
            if self.class_weight is not None:
                loss = loss * self.class_weight[c]
            total = total + loss
        return self.loss_weight * total / num_classes

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, loss_name={self.loss_name!r}"
