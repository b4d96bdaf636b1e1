"""Hungarian matching of mask queries to ground-truth masks (Mask2Former's matcher).

The cost of giving ground truth `j` to query `i` is
`cost_class * -p_i(class_j) + cost_mask * BCE(mask_i, mask_j) + cost_dice * Dice(mask_i, mask_j)`,
the mask terms computed on `num_points` random points shared by all masks (the same points for
predictions and targets); `scipy.optimize.linear_sum_assignment` then finds the one-to-one assignment
of least total cost. Matching needs no gradient.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from segaccel.models.losses.mask_losses import (
    pairwise_dice_cost,
    pairwise_sigmoid_ce_cost,
    point_sample,
    sample_class_masks,
)


def linear_assignment(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The least-cost one-to-one assignment of a `(rows, cols)` cost matrix.

    Returns `(row_idx, col_idx)` int64 tensors of length `min(rows, cols)`, rows ascending. NaN and
    infinite costs are replaced by the largest finite float, so such pairs are chosen only when
    nothing else is left.
    """
    from scipy.optimize import linear_sum_assignment

    big = torch.finfo(cost.dtype).max
    cost = torch.nan_to_num(cost.detach(), nan=big, posinf=big, neginf=big)
    rows, cols = linear_sum_assignment(cost.cpu().to(torch.float64).numpy())
    as_index = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.int64)  # noqa: E731
    return as_index(rows), as_index(cols)


class HungarianMatcher(nn.Module):
    """Assigns each ground-truth mask one query (mmdet's `HungarianAssigner` with Mask2Former's costs).

    Args:
        cost_class: weight of `-softmax(class logits)[gt class]` (mmdet's `ClassificationCost`).
        cost_mask: weight of the mean binary cross-entropy over the points (`CrossEntropyLossCost`).
        cost_dice: weight of the Dice loss over the points (`DiceCost`, naive, eps 1).
        num_points: points sampled uniformly at random for the mask costs.
    """

    def __init__(
        self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0, num_points: int = 12544
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: cost_class, cost_mask and cost_dice cannot all be 0")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    def cost_matrix(
        self,
        cls_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_masks: torch.Tensor | None,
        point_coords: torch.Tensor | None = None,
        gt_sem_seg: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`(Q, G)` costs of one image.

        Args:
            cls_logits: `(Q, C + 1)`, the last class being "no object".
            mask_logits: `(Q, h, w)`.
            gt_labels: `(G,)` class indices.
            gt_masks: `(G, H, W)` binary masks (any resolution: points are in normalised coordinates),
                or None with
            gt_sem_seg: an `(H, W)` label map: the masks `== gt_labels[j]`, read at the points.
            point_coords: `(P, 2)` points `(x, y)` in `[0, 1]`; default `num_points` uniform random ones.
        """
        if point_coords is None:
            point_coords = torch.rand(self.num_points, 2, device=mask_logits.device)
        point_coords = point_coords.to(mask_logits.dtype)
        cost_class = -cls_logits.softmax(-1)[:, gt_labels]
        q, g = mask_logits.shape[0], gt_labels.shape[0]
        pred = point_sample(mask_logits[:, None], point_coords[None].expand(q, -1, -1))[:, 0]
        if gt_sem_seg is not None:
            target = sample_class_masks(gt_sem_seg, gt_labels, point_coords).to(pred.dtype)
        else:
            points = point_coords[None].expand(g, -1, -1)
            target = point_sample(gt_masks[:, None].to(pred.dtype), points)[:, 0]
        return (
            self.cost_class * cost_class
            + self.cost_mask * pairwise_sigmoid_ce_cost(pred, target)
            + self.cost_dice * pairwise_dice_cost(pred, target)
        )

    @torch.no_grad()
    def forward(
        self,
        cls_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_masks: torch.Tensor | None,
        point_coords: torch.Tensor | None = None,
        gt_sem_seg: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(query_idx, gt_idx)` of one image: `min(Q, G)` pairs (see `cost_matrix` for the arguments)."""
        if gt_labels.numel() == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return empty, empty
        cost = self.cost_matrix(
            cls_logits.float(), mask_logits.float(), gt_labels, gt_masks, point_coords, gt_sem_seg
        )
        return linear_assignment(cost)

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
            f"num_points={self.num_points}"
        )
