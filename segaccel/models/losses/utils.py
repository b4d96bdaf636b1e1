"""Helpers shared by the losses: MMSegmentation's weighted reduction and label checks."""

from __future__ import annotations

import torch

_EPS = torch.finfo(torch.float32).eps
REDUCTIONS = ("none", "mean", "sum")


def weight_reduce_loss(
    loss: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """`loss * weight`, then reduced as MMSegmentation's `weight_reduce_loss`.

    `mean` divides by the number of elements, or by `avg_factor` when given; `sum` may not take an
    `avg_factor`.
    """
    if weight is not None:
        loss = loss * weight
    if reduction == "none":
        return loss
    if reduction == "sum":
        if avg_factor is not None:
            raise ValueError('avg_factor can not be used with reduction="sum"')
        return loss.sum()
    if reduction != "mean":
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if avg_factor is None:
        return loss.mean()
    return loss.sum() / (avg_factor + _EPS)


def check_reduction(reduction: str | None, owner: str, allow_none: bool = False) -> None:
    """A clear error for a reduction that is not `none`/`mean`/`sum` (or None where allowed)."""
    if reduction is None and allow_none:
        return
    if reduction not in REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_class_weight(class_weight: object, owner: str) -> list[float] | None:
    """`class_weight` as a list of floats (one per class), or None."""
    if class_weight is None:
        return None
    if isinstance(class_weight, (str, bytes)) or not hasattr(class_weight, "__iter__"):
        raise TypeError(
            f"{owner}: class_weight must be a list of floats (one per class), got {class_weight!r}"
        )
    return [float(w) for w in class_weight]


def check_label_shape(pred: torch.Tensor, label: torch.Tensor, owner: str) -> None:
    """Logits `(N, C, H, W)` need integer labels `(N, H, W)` of the same batch and size."""
    if pred.dim() != 4 or label.shape != (pred.shape[0], *pred.shape[2:]):
        raise ValueError(
            f"{owner}: expected logits (N, C, H, W) and labels (N, H, W) of the same size, got "
            f"{tuple(pred.shape)} and {tuple(label.shape)}"
        )
