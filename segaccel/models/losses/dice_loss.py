"""Dice loss (V-Net), with the arguments and formula of MMSegmentation 1.x's `DiceLoss`.

Per image, over all its (kept) classes and pixels at once:
`1 - 2·Σ p·t / (Σ p² + Σ t²)` (with `eps` added to both sums of squares), or with `naive_dice`
`1 - (2·Σ p·t + eps) / (Σ p + Σ t + eps)`; then reduced over the batch.

Two deliberate differences from MMSegmentation, both about labels that are not classes:
pixels labelled outside `[0, C)` (e.g. 255) are left out of every sum — MMSegmentation keeps their
predictions in the denominator — and a one-channel prediction (binary segmentation) takes label 1
as the foreground (MMSegmentation's one-hot would make it label 0). As in MMSegmentation, an
`ignore_index` that *is* a class drops that class's channel from the sums.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segaccel.models.losses.utils import check_label_shape, check_reduction, weight_reduce_loss


def one_hot_with_valid(
    pred: torch.Tensor, label: torch.Tensor, owner: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot targets `(N, C, H, W)` for integer labels `(N, H, W)`, and the mask of labelled pixels.

    Labels outside `[0, C)` give an all-zero target and a False mask. A one-channel prediction is
    binary: its target is `label == 1`, and labels 0 and 1 are valid.
    """
    check_label_shape(pred, label, owner)
    num_classes = pred.shape[1]
    valid = (label >= 0) & (label < max(num_classes, 2))
    if num_classes == 1:
        return (label == 1).unsqueeze(1).to(pred.dtype), valid
    one_hot = F.one_hot(label.masked_fill(~valid, 0), num_classes).permute(0, 3, 1, 2)
    return one_hot.to(pred.dtype) * valid.unsqueeze(1), valid


class DiceLoss(nn.Module):
    """Dice loss of logits `(N, C, H, W)` against labels `(N, H, W)` (or targets shaped like the logits).

    Args:
        use_sigmoid: activate with a sigmoid per channel (MMSegmentation's default); else softmax
            over the channels (not for a single channel).
        activate: apply that activation; False when `pred` already holds probabilities.
        reduction: `mean`, `sum` or `none` over the batch (one value per image).
        naive_dice: the linear-denominator form (V-Net's is squared).
        loss_weight: factor on the result.
        ignore_index: a class index whose channel is left out (when it is a class).
        eps: smoothing term.
        loss_name: key of this loss in the loss dict.
    """

    def __init__(
        self,
        use_sigmoid: bool = True,
        activate: bool = True,
        reduction: str = "mean",
        naive_dice: bool = False,
        loss_weight: float = 1.0,
        ignore_index: int | None = 255,
        eps: float = 1e-3,
        loss_name: str = "loss_dice",
    ) -> None:
        super().__init__()
        check_reduction(reduction, "DiceLoss")
        self.use_sigmoid = use_sigmoid
        self.activate = activate
        self.reduction = reduction
        self.naive_dice = naive_dice
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index
        self.eps = eps
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
        avg_factor: float | None = None,
        reduction_override: str | None = None,
        ignore_index: int | None = None,
    ) -> torch.Tensor:
        """`weight`: `(N,)` per image (MMSegmentation), or `(N, H, W)` per pixel (e.g. OHEM's 0/1).

        `ignore_index` is accepted for the common loss interface; labels that are not classes are
        always left out.
        """
        check_reduction(reduction_override, "DiceLoss", allow_none=True)
        reduction = reduction_override or self.reduction
        num_classes = pred.shape[1]
        if target.shape == pred.shape:
            one_hot = target.to(pred.dtype)
            valid = None
        else:
            one_hot, valid = one_hot_with_valid(pred, target, "DiceLoss")
        if self.activate:
            if self.use_sigmoid:
                pred = pred.sigmoid()
            elif num_classes != 1:
                pred = pred.softmax(dim=1)
        image_weight = None
        mask = None if valid is None else valid.unsqueeze(1).to(pred.dtype)
        if weight is not None:
            if weight.dim() == 1:
                image_weight = weight.to(pred.dtype)
            else:
                pixel = weight.reshape(pred.shape[0], 1, *pred.shape[2:]).to(pred.dtype)
                mask = pixel if mask is None else mask * pixel
        if mask is not None:
            pred = pred * mask
            one_hot = one_hot * mask
        if self.ignore_index is not None and 0 <= self.ignore_index < num_classes and num_classes > 1:
            keep = torch.arange(num_classes, device=pred.device) != self.ignore_index
            pred, one_hot = pred[:, keep], one_hot[:, keep]
        inputs, targets = pred.flatten(1), one_hot.flatten(1)
        a = (inputs * targets).sum(1)
        if self.naive_dice:
            dice = (2 * a + self.eps) / (inputs.sum(1) + targets.sum(1) + self.eps)
        else:
            dice = 2 * a / ((inputs * inputs).sum(1) + self.eps + (targets * targets).sum(1) + self.eps)
        loss = weight_reduce_loss(1 - dice, image_weight, reduction, avg_factor)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return f"use_sigmoid={self.use_sigmoid}, naive_dice={self.naive_dice}, loss_name={self.loss_name!r}"
