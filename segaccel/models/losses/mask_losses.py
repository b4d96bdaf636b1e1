"""Losses of mask classification (Mask2Former, EoMT): matched class cross-entropy, point-sampled mask
binary cross-entropy and Dice.

For one decoder layer: every ground-truth mask is matched to one query (Hungarian matching); the
class loss is a cross-entropy over all queries, the unmatched ones labelled "no object" (the last
class) with weight `no_object_weight`; the mask losses compare each matched query's mask logits with
its ground-truth mask on `num_points` points, `importance_sample_ratio` of them taken where the
prediction is least certain (|logit| smallest among `oversample_ratio × num_points` random points),
the rest uniformly at random (PointRend's sampling, as in the paper: 12544 points, 3, 0.75). Mask
losses are averaged over the number of ground-truth masks in the batch (over every process).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from segaccel.registry import MODELS

_MATCHER = {
    "type": "HungarianMatcher", "cost_class": 2.0, "cost_mask": 5.0, "cost_dice": 5.0, "num_points": 12544
}


# --- points -------------------------------------------------------------------------------------------
def point_sample(input: torch.Tensor, point_coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of `(N, C, H, W)` maps at `(N, P, 2)` points `(x, y)` in `[0, 1]` → `(N, C, P)`.

    A point at a pixel centre, `((j + 0.5) / W, (i + 0.5) / H)`, gives that pixel's value exactly.
    """
    grid = 2.0 * point_coords[:, :, None, :] - 1.0
    return F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[..., 0]


def sample_class_masks(
    label_map: torch.Tensor, classes: torch.Tensor, point_coords: torch.Tensor
) -> torch.Tensor:
    """`point_sample` of the binary masks `label_map == c`, read from the `(H, W)` label map itself.

    `classes` `(G,)` (distinct); `point_coords` `(P, 2)` (the same points for every class) or
    `(G, P, 2)`, as `(x, y)` in `[0, 1]` → `(G, P)`. Each point takes the bilinear weights of its 4
    neighbouring pixels (zero outside the map), as `grid_sample` with `align_corners=False` does, so no
    full-resolution mask per class is ever built (at 512x512 and 150 classes: 157 MB per image and
    layer otherwise).
    """
    h, w = label_map.shape[-2:]
    flat = label_map.reshape(-1)
    x = point_coords[..., 0] * w - 0.5
    y = point_coords[..., 1] * h - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = x0 + 1, y0 + 1
    # per-axis weights, zero for a neighbour outside the map
    wx0 = (1 - fx) * ((x0 >= 0) & (x0 < w))
    wx1 = fx * ((x1 >= 0) & (x1 < w))
    wy0 = (1 - fy) * ((y0 >= 0) & (y0 < h))
    wy1 = fy * ((y1 >= 0) & (y1 < h))
    xs = (x0.clamp_(0, w - 1), x1.clamp_(0, w - 1))
    ys = (y0.clamp_(0, h - 1).mul_(w), y1.clamp_(0, h - 1).mul_(w))
    corners = ((0, 0, wy0, wx0), (0, 1, wy0, wx1), (1, 0, wy1, wx0), (1, 1, wy1, wx1))
    if point_coords.dim() == 2:  # shared points: scatter each point's 4 weights into its classes' columns
        top = max(int(flat.max()), int(classes.max()) if classes.numel() else 0)
        slot = torch.full((top + 1,), len(classes), dtype=torch.long, device=flat.device)  # else: a spare
        slot[classes] = torch.arange(len(classes), device=flat.device)
        index = torch.stack([slot[flat[ys[a] + xs[b]]] for a, b, _, _ in corners], dim=1)  # (P, 4)
        weight = torch.stack([wy * wx for _, _, wy, wx in corners], dim=1)
        out = weight.new_zeros(weight.shape[0], len(classes) + 1).scatter_add_(1, index, weight)
        return out[:, :-1].T
    wanted = classes[:, None]
    total = torch.zeros_like(fx)
    for a, b, wy, wx in corners:  # one corner at a time: little memory
        total += torch.where(flat[ys[a] + xs[b]] == wanted, wy * wx, 0.0)
    return total


def uncertain_point_coords(
    mask_logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> torch.Tensor:
    """PointRend's training points for `(M, 1, H, W)` mask logits → `(M, num_points, 2)` in `[0, 1]`.

    `int(importance_sample_ratio * num_points)` of them are the most uncertain (smallest |logit|)
    of `int(oversample_ratio * num_points)` uniform random points; the rest are uniform random.
    """
    m = mask_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(m, num_sampled, 2, device=mask_logits.device, dtype=mask_logits.dtype)
    uncertainty = -point_sample(mask_logits, coords).abs()  # (M, 1, num_sampled)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(uncertainty[:, 0, :], k=num_uncertain, dim=1, sorted=False)[1]  # order is irrelevant
    coords = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        extra = torch.rand(m, num_random, 2, device=mask_logits.device, dtype=mask_logits.dtype)
        coords = torch.cat([coords, extra], dim=1)
    return coords


# --- losses of matched masks --------------------------------------------------------------------------
def sigmoid_ce_loss(
    logits: torch.Tensor, targets: torch.Tensor, num_masks: float | torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy of `(M, P)` logits: mean over the points, summed over masks / `num_masks`."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float | torch.Tensor) -> torch.Tensor:
    """`1 - (2 Σ p t + 1) / (Σ p + Σ t + 1)` per mask (p = sigmoid), summed / `num_masks`."""
    probs = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def pairwise_sigmoid_ce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction `(Q, P)` against every target `(G, P)` → `(Q, G)`.

    `BCE(x, t) = softplus(x) - x t` for a target `t` in [0, 1], so the pairwise sum is one matmul.
    """
    num_points = logits.shape[1]
    return (F.softplus(logits).sum(-1, keepdim=True) - logits @ targets.T) / num_points


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of every prediction `(Q, P)` against every target `(G, P)` → `(Q, G)`."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def num_masks_across_processes(count: int, device: torch.device) -> torch.Tensor:
    """The mean number of ground-truth masks per process (at least 1), as mmdet's `reduce_mean`."""
    total = torch.as_tensor(float(count), device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(total)
        total = total / dist.get_world_size()
    return total.clamp(min=1.0)


class MaskClassificationLoss(nn.Module):
    """Set-prediction loss of one layer's class and mask predictions (Mask2Former's criterion).

    Args:
        class_weight: weight of the class cross-entropy (MMSegmentation's `loss_cls.loss_weight`).
        mask_weight: weight of the point binary cross-entropy (`loss_mask.loss_weight`).
        dice_weight: weight of the point Dice loss (`loss_dice.loss_weight`).
        no_object_weight: class weight of "no object" in the cross-entropy (the others have 1).
        num_points, oversample_ratio, importance_sample_ratio: the point sampling of the mask losses.
        matcher: the matcher config (`HungarianMatcher` with its costs and points).
    """

    def __init__(
        self,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        matcher: dict[str, Any] = _MATCHER,
    ) -> None:
        super().__init__()
        if not 0 <= importance_sample_ratio <= 1:
            raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
        if oversample_ratio < 1:
            raise ValueError(f"oversample_ratio must be at least 1, got {oversample_ratio}")
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.no_object_weight = no_object_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.matcher = MODELS.build(matcher, key="loss_decode.matcher")

    def class_loss(
        self, cls_logits: torch.Tensor, gt_labels: Sequence[torch.Tensor], indices: Sequence[tuple]
    ) -> torch.Tensor:
        """Cross-entropy of `(N, Q, C + 1)` logits; unmatched queries are "no object" (class C)."""
        n, q, c1 = cls_logits.shape
        target = torch.full((n, q), c1 - 1, dtype=torch.int64, device=cls_logits.device)
        for i, (query_idx, gt_idx) in enumerate(indices):
            labels = gt_labels[i][gt_idx.to(gt_labels[i].device)]
            target[i, query_idx.to(target.device)] = labels.to(target.device)
        weight = cls_logits.new_ones(c1)
        weight[-1] = self.no_object_weight
        return F.cross_entropy(cls_logits.float().transpose(1, 2), target, weight=weight.float())

    def mask_losses(
        self,
        pred_masks: torch.Tensor,
        target_masks: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
        num_masks: torch.Tensor,
        point_coords: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Point BCE and Dice of matched `(M, h, w)` logits against `(M, H, W)` binary masks (or a
        function giving the targets `(M, P)` at points `(M, P, 2)`).

        `point_coords` `(M, P, 2)` replaces the uncertainty sampling (e.g. every pixel centre).
        """
        pred_masks = pred_masks[:, None].float()
        if point_coords is None:
            with torch.no_grad():
                point_coords = uncertain_point_coords(
                    pred_masks, self.num_points, self.oversample_ratio, self.importance_sample_ratio
                )
        with torch.no_grad():
            if callable(target_masks):
                point_labels = target_masks(point_coords).to(pred_masks.dtype)
            else:
                point_labels = point_sample(target_masks[:, None].to(pred_masks.dtype), point_coords)[:, 0]
        point_logits = point_sample(pred_masks, point_coords)[:, 0]
        return (
            sigmoid_ce_loss(point_logits, point_labels, num_masks),
            dice_loss(point_logits, point_labels, num_masks),
        )

    def forward(
        self,
        cls_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        gt_labels: Sequence[torch.Tensor],
        gt_masks: Sequence[torch.Tensor] | None = None,
        gt_sem_seg: Sequence[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Weighted `loss_cls`, `loss_mask`, `loss_dice` of one layer.

        Args:
            cls_logits: `(N, Q, C + 1)`.
            mask_logits: `(N, Q, h, w)`.
            gt_labels: per image, `(G_i,)` class indices.
            gt_masks: per image, `(G_i, H, W)` binary masks (H, W may differ from h, w); or
            gt_sem_seg: per image, the `(H, W)` label map whose masks `== gt_labels[i][j]` are the
                targets (semantic segmentation: read at the points, never built).
        """
        if (gt_masks is None) == (gt_sem_seg is None):
            raise ValueError("MaskClassificationLoss: give gt_masks or gt_sem_seg (one of them)")
        indices = [
            self.matcher(
                cls_logits[i],
                mask_logits[i],
                gt_labels[i],
                None if gt_masks is None else gt_masks[i],
                gt_sem_seg=None if gt_sem_seg is None else gt_sem_seg[i],
            )
            for i in range(len(gt_labels))
        ]
        num_masks = num_masks_across_processes(sum(len(lab) for lab in gt_labels), mask_logits.device)
        loss_cls = self.class_loss(cls_logits, gt_labels, indices)
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        query_idx = torch.cat([src for src, _ in indices])
        if query_idx.numel() == 0:  # no ground truth in the batch: keep the graph, add nothing
            zero = mask_logits.sum() * 0.0
            loss_mask, loss_dice = zero, zero
        else:
            pred = mask_logits[batch_idx.to(mask_logits.device), query_idx.to(mask_logits.device)]
            if gt_masks is not None:
                target = torch.cat(
                    [gt_masks[i][gt_idx.to(gt_masks[i].device)] for i, (_, gt_idx) in enumerate(indices)]
                )
                loss_mask, loss_dice = self.mask_losses(pred, target.to(pred.device), num_masks)
            else:
                sizes = [len(gt_idx) for _, gt_idx in indices]

                def targets(points: torch.Tensor) -> torch.Tensor:  # (M, P, 2) → (M, P), image by image
                    parts = [
                        sample_class_masks(gt_sem_seg[i], gt_labels[i][gt_idx.to(gt_labels[i].device)], pts)
                        for i, ((_, gt_idx), pts) in enumerate(zip(indices, points.split(sizes)))
                    ]
                    return torch.cat(parts)

                loss_mask, loss_dice = self.mask_losses(pred, targets, num_masks)
        return {
            "loss_cls": self.class_weight * loss_cls,
            "loss_mask": self.mask_weight * loss_mask,
            "loss_dice": self.dice_weight * loss_dice,
        }

    def extra_repr(self) -> str:
        return (
            f"class_weight={self.class_weight}, mask_weight={self.mask_weight}, "
            f"dice_weight={self.dice_weight}, no_object_weight={self.no_object_weight}, "
            f"num_points={self.num_points}"
        )
