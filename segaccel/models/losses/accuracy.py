"""Pixel accuracy of logits against labels, in percent (MMSegmentation's `accuracy`)."""

from __future__ import annotations

import torch

_EPS = torch.finfo(torch.float32).eps


def accuracy(
    pred: torch.Tensor,
    target: torch.Tensor,
    topk: int | tuple[int, ...] = 1,
    thresh: float | None = None,
    ignore_index: int | None = 255,
) -> torch.Tensor | list[torch.Tensor]:
    """Top-k accuracy (%) of scores `(N, C, ...)` against labels `(N, ...)`, ignored labels excluded.

    A pixel counts as correct when its label is among the k highest scores (and, with `thresh`, that
    score exceeds `thresh`). Returns a 0-d float tensor (a list of them for a tuple `topk`); 0 when
    every label is ignored. No host synchronisation.
    """
    single = isinstance(topk, int)
    topks = (topk,) if single else tuple(topk)
    maxk = max(topks)
    if pred.dim() != target.dim() + 1 or pred.shape[0] != target.shape[0]:
        raise ValueError(
            f"accuracy: expected pred (N, C, ...) and target (N, ...), got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if maxk > pred.shape[1]:
        raise ValueError(f"accuracy: topk={maxk} exceeds the {pred.shape[1]} classes of pred")
    if maxk == 1:
        value, label = pred.max(dim=1, keepdim=True)
    else:
        value, label = pred.topk(maxk, dim=1)  # (N, k, ...)
    correct = label == target.unsqueeze(1)
    if thresh is not None:
        correct &= value > thresh
    if ignore_index is not None:
        valid = target != ignore_index
        correct &= valid.unsqueeze(1)
        total = valid.sum()
    else:
        total = target.numel()
    results = [correct[:, :k].sum().float().mul(100.0) / (total + _EPS) for k in topks]
    return results[0] if single else results


def label_accuracy(
    pred_label: torch.Tensor, target: torch.Tensor, ignore_index: int | None = 255
) -> torch.Tensor:
    """Accuracy (%) of predicted labels against labels of the same shape, ignored labels excluded."""
    correct = pred_label == target
    if ignore_index is None:
        return correct.sum().float().mul(100.0) / (target.numel() + _EPS)
    valid = target != ignore_index
    return (correct & valid).sum().float().mul(100.0) / (valid.sum() + _EPS)
