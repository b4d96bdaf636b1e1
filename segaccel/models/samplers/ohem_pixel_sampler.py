"""Online hard example mining over pixels (MMSegmentation's `OHEMPixelSampler`).

Configured on a decode head as `sampler: {type: OHEMPixelSampler, thresh: 0.7, min_kept: 100000}`;
the head builds it with itself as `context` and passes the returned 0/1 weights to its losses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class OHEMPixelSampler:
    """Keep the hard pixels: a weight of 1 for them, 0 for the others and for ignored pixels.

    With `thresh`: pixels whose softmax probability of the true class is below
    `max(thresh, p_k)` are kept, where `p_k` is the `min_kept * N`-th smallest such probability (so at
    least `min_kept` pixels per image survive when there are that many). Without `thresh`: the
    `min_kept * N` pixels with the largest loss (the head's losses summed, unreduced).

    Not an `nn.Module` (it has no parameters): `context` is the head it serves, read for its
    `ignore_index` and `loss_decode`.
    """

    def __init__(self, context: Any, thresh: float | None = None, min_kept: int = 100000) -> None:
        if min_kept <= 1:
            raise ValueError(f"OHEMPixelSampler: min_kept must be > 1, got {min_kept}")
        if thresh is not None and not 0.0 < thresh <= 1.0:
            raise ValueError(f"OHEMPixelSampler: thresh is a probability in (0, 1], got {thresh}")
        self.context = context
        self.thresh = thresh
        self.min_kept = int(min_kept)

    def __repr__(self) -> str:
        return f"OHEMPixelSampler(thresh={self.thresh}, min_kept={self.min_kept})"

    @torch.no_grad()
    def sample(self, seg_logit: torch.Tensor, seg_label: torch.Tensor) -> torch.Tensor:
        """Weights `(N, H, W)` (0 or 1) for logits `(N, C, H, W)` and labels `(N, 1, H, W)` or `(N, H, W)`."""
        if seg_label.dim() == 4:
            seg_label = seg_label.squeeze(1)
        if seg_logit.shape[2:] != seg_label.shape[1:]:
            raise ValueError(
                f"OHEMPixelSampler: logits {tuple(seg_logit.shape)} and labels {tuple(seg_label.shape)} "
                "differ in size"
            )
        seg_label = seg_label.long()
        ignore_index = self.context.ignore_index
        batch_kept = self.min_kept * seg_label.shape[0]
        valid_mask = seg_label != ignore_index
        seg_weight = seg_logit.new_zeros(seg_label.shape)
        valid_weight = seg_weight[valid_mask]
        if self.thresh is not None:
            if seg_logit.shape[1] == 1:  # binary: the probability of the true class from the sigmoid
                fg = seg_logit[:, 0].float().sigmoid()
                seg_prob = torch.where(seg_label == 1, fg, 1 - fg)
            else:
                label = seg_label.masked_fill(~valid_mask, 0).unsqueeze(1)
                seg_prob = seg_logit.float().softmax(dim=1).gather(1, label).squeeze(1)
            valid_prob = seg_prob[valid_mask]
            sort_prob, _ = valid_prob.sort()
            if sort_prob.numel() > 0:
                threshold = torch.clamp(sort_prob[min(batch_kept, sort_prob.numel() - 1)], min=self.thresh)
            else:
                threshold = self.thresh
            valid_weight[valid_prob < threshold] = 1.0
        else:
            losses_decode = self.context.loss_decode
            if not isinstance(losses_decode, nn.ModuleList):
                losses_decode = [losses_decode]
            losses = 0.0
            for loss_module in losses_decode:
                loss = loss_module(
                    seg_logit, seg_label, weight=None, ignore_index=ignore_index, reduction_override="none"
                )
                if loss.dim() == 4:  # per-element losses (sigmoid ones): sum over the classes
                    loss = loss.sum(dim=1)
                losses = losses + loss
            _, sort_indices = losses[valid_mask].sort(descending=True)
            valid_weight[sort_indices[:batch_kept]] = 1.0
        seg_weight[valid_mask] = valid_weight
        return seg_weight
