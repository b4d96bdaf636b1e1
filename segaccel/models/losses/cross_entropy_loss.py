"""Cross-entropy (softmax) and binary cross-entropy (sigmoid) losses with MMSegmentation semantics.

Averaging (`reduction="mean"`), as in MMSegmentation:

- `avg_non_ignore=False` (its default): the summed loss is divided by *all* pixels, ignored ones
  included (ignored pixels contribute 0 to the sum). With sigmoid, by all elements `N*C*H*W`.
- `avg_non_ignore=True`: divided by the non-ignored pixels only.

With `class_weight` (softmax), every pixel counts with its class's weight, as MMSegmentation 1.x
normalises: `avg_non_ignore=True` divides by the summed weights of the non-ignored pixels, which is
exactly `F.cross_entropy(..., weight=class_weight, ignore_index=...)` with `reduction="mean"` (except
that an all-ignored batch gives 0, not NaN); `avg_non_ignore=False` also adds the ignored pixels,
each with weight `class_weight[ignore_index]` when the ignore label is a class index, else 1
(MMSegmentation indexes `class_weight` with the ignore label there, which fails for 255: our fix).
Without ignored pixels both settings equal PyTorch's weighted mean.

`class_weight` never indexes an ignore label outside the classes, so it works with any `ignore_index`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_EPS = torch.finfo(torch.float32).eps
_REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: torch.Tensor, reduction: str, avg_factor: torch.Tensor | float | None) -> torch.Tensor:
    """MMSegmentation's `weight_reduce_loss` reduction (weights already applied)."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        if avg_factor is not None:
            raise ValueError('avg_factor can not be used with reduction="sum"')
        return loss.sum()
    if avg_factor is None:
        return loss.mean()
    return loss.sum() / (avg_factor + _EPS)


def cross_entropy(
    pred: torch.Tensor,
    label: torch.Tensor,
    weight: torch.Tensor | None = None,
    class_weight: torch.Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | None = None,
    ignore_index: int = 255,
    avg_non_ignore: bool = False,
) -> torch.Tensor:
    """Softmax cross-entropy of logits `(N, C, H, W)` (or `(N, C)`) against labels `(N, H, W)` (or `(N,)`).

    `weight` is a per-pixel weight shaped like `label`; `class_weight` a `(C,)` tensor.
    """
    if weight is None and reduction != "none":
        # the common case: one fused reduction, no per-pixel loss map kept around
        total = F.cross_entropy(pred, label, weight=class_weight, reduction="sum", ignore_index=ignore_index)
        if reduction == "sum":
            return _reduce(total, reduction, avg_factor)
    else:
        loss = F.cross_entropy(pred, label, weight=class_weight, reduction="none", ignore_index=ignore_index)
        if weight is not None:
            loss = loss * weight.to(loss.dtype)
        if reduction != "mean":
            return _reduce(loss, reduction, avg_factor)
        total = loss.sum()
    if avg_factor is None:
        avg_factor = _average_factor(label, class_weight, ignore_index, avg_non_ignore)
    return total / (avg_factor + _EPS)


def _average_factor(
    label: torch.Tensor, class_weight: torch.Tensor | None, ignore_index: int, avg_non_ignore: bool
) -> torch.Tensor | int:
    """What MMSegmentation divides the summed loss by (see the module docstring)."""
    valid = label != ignore_index
    if class_weight is None:
        return valid.sum() if avg_non_ignore else label.numel()
    # each valid pixel counts with its class weight; the ignore label never indexes out of range
    factor = (class_weight[label.masked_fill(~valid, 0)] * valid).sum()
    if not avg_non_ignore:
        in_range = 0 <= ignore_index < class_weight.numel()
        ignored_weight = class_weight[ignore_index] if in_range else class_weight.new_ones(())
        factor = factor + (~valid).sum() * ignored_weight
    return factor


def binary_cross_entropy(
    pred: torch.Tensor,
    label: torch.Tensor,
    weight: torch.Tensor | None = None,
    class_weight: torch.Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | None = None,
    ignore_index: int = 255,
    avg_non_ignore: bool = False,
) -> torch.Tensor:
    """Sigmoid BCE of logits `(N, C, H, W)` against integer labels `(N, H, W)` (one-hot expanded).

    Also accepts `(N, C)` logits with `(N,)` labels, a one-channel `(N, 1, H, W)` prediction with
    0/1 labels (binary segmentation), and targets shaped like `pred`. Ignored pixels get weight 0.
    `class_weight` is the per-class `pos_weight` of `F.binary_cross_entropy_with_logits`.
    """
    if pred.dim() == label.dim() + 1 and pred.shape[1] == 1:
        pred = pred.squeeze(1)  # binary segmentation: one logit per pixel, labels 0/1
    valid = (label >= 0) & (label != ignore_index)
    if pred.dim() == label.dim():  # targets already shaped like pred
        target = label.to(pred.dtype)
        element_weight = valid.to(pred.dtype)
        num_valid = valid.sum()
    elif pred.dim() == label.dim() + 1 and pred.dim() in (2, 4):  # integer labels → one-hot
        target = torch.zeros_like(pred).scatter_(1, label.masked_fill(~valid, 0).unsqueeze(1), 1.0)
        element_weight = valid.unsqueeze(1).to(pred.dtype)  # broadcast over the classes
        num_valid = valid.sum() * pred.shape[1]
        if weight is not None:
            weight = weight.unsqueeze(1)
    else:
        raise ValueError(
            f"binary_cross_entropy: expected pred (N, C, H, W) with label (N, H, W), pred (N, C) with label "
            f"(N,), or a label shaped like pred; got {tuple(pred.shape)} and {tuple(label.shape)}"
        )
    if weight is not None:
        element_weight = element_weight * weight.to(pred.dtype)
    pos_weight = None
    if class_weight is not None:  # per class, along dim 1
        if class_weight.numel() == 1:
            pos_weight = class_weight.reshape(())
        else:
            pos_weight = class_weight.reshape(-1, *([1] * (pred.dim() - 2)))
    loss = F.binary_cross_entropy_with_logits(pred, target, pos_weight=pos_weight, reduction="none")
    loss = loss * element_weight
    if avg_factor is None and reduction == "mean" and avg_non_ignore:
        avg_factor = num_valid
    return _reduce(loss, reduction, avg_factor)


class CrossEntropyLoss(nn.Module):
    """Pixel-wise (binary) cross-entropy, configured as in MMSegmentation.

    `forward(cls_score (N, C, H, W), label (N, H, W) int64)` → a scalar (`reduction` mean/sum) or a
    per-pixel map (`none`), times `loss_weight`. `class_weight` is a list of C floats.
    """

    def __init__(
        self,
        use_sigmoid: bool = False,
        class_weight: Sequence[float] | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
        loss_name: str = "loss_ce",
        avg_non_ignore: bool = False,
        ignore_index: int | None = 255,
    ) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"CrossEntropyLoss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if class_weight is not None and (
            isinstance(class_weight, (str, bytes)) or not isinstance(class_weight, (Sequence, torch.Tensor))
        ):
            raise TypeError(
                "CrossEntropyLoss: class_weight must be a list of floats (one per class), "
                f"got {class_weight!r}"
            )
        self.use_sigmoid = use_sigmoid
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.avg_non_ignore = avg_non_ignore
        self.ignore_index = ignore_index
        self._loss_name = loss_name
        # a buffer so that it follows the module to the device (no host→device copy per step)
        weights = (
            None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32).flatten()
        )
        self.register_buffer("class_weight", weights, persistent=False)
        self.criterion = binary_cross_entropy if use_sigmoid else cross_entropy

    @property
    def loss_name(self) -> str:
        """Key of this loss in the loss dict; keys starting with `loss_` are summed for backward."""
        return self._loss_name

    def forward(
        self,
        cls_score: torch.Tensor,
        label: torch.Tensor,
        ignore_index: int | None = None,
        *,
        weight: torch.Tensor | None = None,
        avg_factor: float | None = None,
        reduction_override: str | None = None,
    ) -> torch.Tensor:
        """Loss of logits `(N, C, H, W)` against labels `(N, H, W)`; `ignore_index` None: the module's."""
        if reduction_override not in (None, *_REDUCTIONS):
            raise ValueError(
                f"reduction_override must be None or one of {_REDUCTIONS}, got {reduction_override!r}"
            )
        reduction = reduction_override or self.reduction
        if ignore_index is None:
            ignore_index = -100 if self.ignore_index is None else self.ignore_index
        class_weight = self.class_weight
        if class_weight is not None:
            if class_weight.numel() != cls_score.shape[1]:
                raise ValueError(
                    f"CrossEntropyLoss: class_weight has {class_weight.numel()} entries but the prediction "
                    f"has {cls_score.shape[1]} channels"
                )
            class_weight = class_weight.to(cls_score.dtype)
        loss = self.criterion(
            cls_score,
            label,
            weight=weight,
            class_weight=class_weight,
            reduction=reduction,
            avg_factor=avg_factor,
            ignore_index=ignore_index,
            avg_non_ignore=self.avg_non_ignore,
        )
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (
            f"use_sigmoid={self.use_sigmoid}, avg_non_ignore={self.avg_non_ignore}, "
            f"loss_name={self.loss_name!r}"
        )
