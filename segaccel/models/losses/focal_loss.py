"""Sigmoid focal loss (Lin et al., 2017) with MMSegmentation's `FocalLoss` arguments and semantics.

Element-wise over `(N, C, H, W)`: `BCE(p, t) · (α·t + (1-α)·(1-t)) · |t - σ(p)|^γ`, times the pixel
`weight`, the `class_weight` and the valid mask (ignored pixels give 0), then `mean` over *all*
elements (ignored ones included, as MMSegmentation) or `sum`, or the map itself (`none`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segaccel.models.losses.utils import check_class_weight, check_reduction, weight_reduce_loss


class FocalLoss(nn.Module):
    """Focal loss of logits `(N, C, H, W)` against labels `(N, H, W)` or one-hot targets `(N, C, H, W)`.

    Args:
        use_sigmoid: must be True (only the sigmoid form exists, as in MMSegmentation).
        gamma: focusing exponent.
        alpha: balance of positives (a float, or one float per class).
        reduction: `mean`, `sum` or `none` (the `(N, C, H, W)` map).
        class_weight: one weight per class.
        loss_weight: factor on the result.
        loss_name: key of this loss in the loss dict.

    A one-channel prediction (binary segmentation) takes labels 0/1 as its target.
    """

    def __init__(
        self,
        use_sigmoid: bool = True,
        gamma: float = 2.0,
        alpha: float | Sequence[float] = 0.5,
        reduction: str = "mean",
        class_weight: Sequence[float] | None = None,
        loss_weight: float = 1.0,
        loss_name: str = "loss_focal",
    ) -> None:
        super().__init__()
        if not use_sigmoid:
            raise ValueError("FocalLoss: only the sigmoid form is implemented (use_sigmoid=True)")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
            raise TypeError(f"FocalLoss: gamma must be a float, got {gamma!r}")
        if isinstance(alpha, (str, bytes)) or not isinstance(alpha, (int, float, Sequence)):
            raise TypeError(f"FocalLoss: alpha must be a float or a list of floats, got {alpha!r}")
        check_reduction(reduction, "FocalLoss")
        self.use_sigmoid = use_sigmoid
        self.gamma = float(gamma)
        self.alpha = alpha if isinstance(alpha, (int, float)) else [float(a) for a in alpha]
        self.reduction = reduction
        self.class_weight = check_class_weight(class_weight, "FocalLoss")
        self.loss_weight = loss_weight
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
        ignore_index: int | None = 255,
    ) -> torch.Tensor:
        """`weight`: per pixel (`(N, H, W)`, or MMSegmentation's `(N*H*W,)`/`(N*H*W, 1)`) or per
        element (`(N*H*W, C)`, pixels in `(n, h, w)` order)."""
        check_reduction(reduction_override, "FocalLoss", allow_none=True)
        reduction = reduction_override or self.reduction
        n, c, h, w = pred.shape
        if target.shape == pred.shape:  # one-hot targets
            one_hot = target.to(pred.dtype)
            valid = (
                target.argmax(dim=1) != ignore_index if c > 1 else torch.ones_like(target[:, 0], dtype=bool)
            )
        elif target.shape == (n, h, w):
            valid = (
                target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=bool)
            )
            label = target.masked_fill(~valid, 0)
            upper = max(c, 2)
            if bool(((label < 0) | (label >= upper)).any()):
                raise ValueError(
                    f"FocalLoss: labels must lie in [0, {upper}) or equal ignore_index={ignore_index}; "
                    f"got values {sorted(set(label.unique().tolist()))}"
                )
            if c == 1:
                one_hot = label.unsqueeze(1).to(pred.dtype)
            else:
                one_hot = F.one_hot(label, c).permute(0, 3, 1, 2).to(pred.dtype)
        else:
            raise ValueError(
                f"FocalLoss: expected logits (N, C, H, W) with labels (N, H, W) or one-hot targets of the "
                f"same shape; got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        alpha = self.alpha
        if isinstance(alpha, list):
            alpha = pred.new_tensor(alpha).view(1, -1, 1, 1)
        prob = pred.sigmoid()
        one_minus_pt = (1 - prob) * one_hot + prob * (1 - one_hot)
        focal_weight = (alpha * one_hot + (1 - alpha) * (1 - one_hot)) * one_minus_pt.pow(self.gamma)
        loss = F.binary_cross_entropy_with_logits(pred, one_hot, reduction="none") * focal_weight
        final_weight = valid.unsqueeze(1).to(pred.dtype)
        if weight is not None:
            final_weight = final_weight * self._element_weight(weight, pred)
        if self.class_weight is not None:
            final_weight = final_weight * pred.new_tensor(self.class_weight).view(1, -1, 1, 1)
        return self.loss_weight * weight_reduce_loss(loss, final_weight, reduction, avg_factor)

    @staticmethod
    def _element_weight(weight: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        n, c, h, w = pred.shape
        weight = weight.to(pred.dtype)
        if weight.dim() == 2 and weight.shape == (n * h * w, c) and c > 1:
            return weight.reshape(n, h, w, c).permute(0, 3, 1, 2)
        if weight.numel() == n * h * w:
            return weight.reshape(n, 1, h, w)
        raise ValueError(
            f"FocalLoss: weight of shape {tuple(weight.shape)} fits neither the pixels (N, H, W) = "
            f"{(n, h, w)} nor the elements (N*H*W, C) = {(n * h * w, c)}"
        )

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, loss_name={self.loss_name!r}"
