"""Lovász loss (Berman et al., 2018): a convex surrogate of the IoU, as MMSegmentation's `LovaszLoss`.

`multi_class`: Lovász-softmax on the softmax probabilities, averaged over the classes (`present`:
only classes that occur in the labels; `all`; or a list of class indices). `binary`: Lovász hinge on
one logit per pixel with 0/1 labels. `per_image=False` computes one loss over the whole batch, and
then MMSegmentation requires `reduction="none"`; `per_image=True` computes one per image and reduces
them. Ignored pixels (and pixels whose `weight` is 0, e.g. not picked by OHEM) are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segaccel.models.losses.utils import check_class_weight, check_reduction, weight_reduce_loss

_LOSS_TYPES = ("binary", "multi_class")


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted in decreasing order."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_hinge_flat(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary Lovász hinge of logits `(P,)` against 0/1 labels `(P,)`."""
    if labels.numel() == 0:
        return logits.sum() * 0.0
    signs = 2.0 * labels.to(logits.dtype) - 1.0
    errors = 1.0 - logits * signs
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    grad = lovasz_grad(labels[perm].to(logits.dtype))
    return torch.dot(F.relu(errors_sorted), grad)


def lovasz_softmax_flat(
    probs: torch.Tensor,
    labels: torch.Tensor,
    classes: str | Sequence[int] = "present",
    class_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-class Lovász-softmax of probabilities `(P, C)` against labels `(P,)`, averaged over classes."""
    if probs.numel() == 0:
        return probs.sum() * 0.0
    num_classes = probs.shape[1]
    chosen = range(num_classes) if classes in ("all", "present") else classes
    losses = []
    for c in chosen:
        fg = (labels == c).to(probs.dtype)
        if classes == "present" and fg.sum() == 0:
            continue
        class_pred = probs[:, 0] if num_classes == 1 else probs[:, c]
        errors = (fg - class_pred).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        loss = torch.dot(errors_sorted, lovasz_grad(fg[perm]))
        if class_weight is not None:
            loss = loss * class_weight[c]
        losses.append(loss)
    if not losses:
        return probs.sum() * 0.0
    return torch.stack(losses).mean()


class LovaszLoss(nn.Module):
    """Lovász loss of logits `(N, C, H, W)` against labels `(N, H, W)`.

    For `loss_type="binary"` the logits are `(N, 1, H, W)` or `(N, H, W)` and the labels 0/1.

    Args:
        loss_type: `multi_class` or `binary`.
        classes: `present`, `all` or a list of class indices (multi-class only).
        per_image: one loss per image (then reduced) instead of one over the batch.
        reduction: `none` (required when `per_image=False`), `mean` or `sum`.
        class_weight: one weight per class (multi-class only).
        loss_weight: factor on the result.
        loss_name: key of this loss in the loss dict.
    """

    def __init__(
        self,
        loss_type: str = "multi_class",
        classes: str | Sequence[int] = "present",
        per_image: bool = False,
        reduction: str = "mean",
        class_weight: Sequence[float] | None = None,
        loss_weight: float = 1.0,
        loss_name: str = "loss_lovasz",
    ) -> None:
        super().__init__()
        if loss_type not in _LOSS_TYPES:
            raise ValueError(f"LovaszLoss: loss_type must be one of {_LOSS_TYPES}, got {loss_type!r}")
        if not (
            classes in ("all", "present")
            or (isinstance(classes, (list, tuple)) and all(isinstance(c, int) for c in classes))
        ):
            raise ValueError(
                f"LovaszLoss: classes must be 'all', 'present' or a list of ints, got {classes!r}"
            )
        check_reduction(reduction, "LovaszLoss")
        if not per_image and reduction != "none":
            raise ValueError(
                "LovaszLoss: with per_image=False the loss is one value for the whole batch; set "
                f"reduction='none' (as MMSegmentation requires), got reduction={reduction!r}"
            )
        self.loss_type = loss_type
        self.classes = classes if isinstance(classes, str) else list(classes)
        self.per_image = per_image
        self.reduction = reduction
        self.class_weight = check_class_weight(class_weight, "LovaszLoss")
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(
        self,
        cls_score: torch.Tensor,
        label: torch.Tensor,
        weight: torch.Tensor | None = None,
        avg_factor: float | None = None,
        reduction_override: str | None = None,
        ignore_index: int | None = 255,
    ) -> torch.Tensor:
        """`weight` `(N, H, W)`: pixels with weight 0 are left out (the loss has no pixel weights)."""
        check_reduction(reduction_override, "LovaszLoss", allow_none=True)
        reduction = reduction_override or self.reduction
        keep = torch.ones_like(label, dtype=torch.bool) if ignore_index is None else label != ignore_index
        if weight is not None:
            keep = keep & (weight.reshape(label.shape) > 0)
        if self.loss_type == "binary":
            logits = cls_score.reshape(label.shape)
            per_image = [lovasz_hinge_flat(x[k], y[k]) for x, y, k in zip(logits, label, keep)]
            whole = lambda: lovasz_hinge_flat(logits[keep], label[keep])  # noqa: E731
        else:
            if cls_score.dim() != 4 or label.shape != (cls_score.shape[0], *cls_score.shape[2:]):
                raise ValueError(
                    f"LovaszLoss: expected logits (N, C, H, W) and labels (N, H, W), got "
                    f"{tuple(cls_score.shape)} and {tuple(label.shape)}"
                )
            probs = cls_score.softmax(dim=1).permute(0, 2, 3, 1)  # (N, H, W, C)
            class_weight = None if self.class_weight is None else probs.new_tensor(self.class_weight)
            per_image = [
                lovasz_softmax_flat(p[k], y[k], self.classes, class_weight)
                for p, y, k in zip(probs, label, keep)
            ]
            whole = lambda: lovasz_softmax_flat(probs[keep], label[keep], self.classes, class_weight)  # noqa: E731
        if self.per_image:
            loss = weight_reduce_loss(torch.stack(per_image), None, reduction, avg_factor)
        else:
            loss = whole()
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return f"loss_type={self.loss_type!r}, per_image={self.per_image}, loss_name={self.loss_name!r}"
