"""Hungarian matching: the least-cost assignment (against brute force) and Mask2Former's cost terms."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from segaccel.models.matchers import HungarianMatcher, linear_assignment


def brute_force(cost: torch.Tensor) -> float:
    """The least total cost of a one-to-one assignment of min(rows, cols) pairs, by enumeration."""
    rows, cols = cost.shape
    if rows >= cols:
        return min(
            sum(cost[r, c].item() for r, c in zip(perm, range(cols)))
            for perm in itertools.permutations(range(rows), cols)
        )
    return brute_force(cost.T)


@pytest.mark.parametrize("shape", [(3, 3), (5, 3), (3, 5), (6, 4), (1, 4), (4, 1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_assignment_is_optimal(shape, seed):
    cost = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    rows, cols = linear_assignment(cost)
    assert len(rows) == len(cols) == min(shape)
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    assert rows.tolist() == sorted(rows.tolist())
    assert cost[rows, cols].sum().item() == pytest.approx(brute_force(cost), abs=1e-6)


def test_linear_assignment_avoids_nan_and_inf():
    cost = torch.tensor([[float("nan"), 1.0, 5.0], [2.0, float("inf"), 3.0], [0.5, 4.0, float("-inf")]])
    rows, cols = linear_assignment(cost)
    # the only assignment avoiding every non-finite entry: (0,1), (1,2), (2,0)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 1: 2, 2: 0}


def test_cost_matrix_terms_by_hand():
    """Class, BCE and Dice costs on points at every pixel centre equal their dense definitions."""
    g = torch.Generator().manual_seed(0)
    q, c, h, w = 4, 3, 5, 7
    cls_logits = torch.randn(q, c + 1, generator=g)
    mask_logits = torch.randn(q, h, w, generator=g)
    gt_masks = torch.rand(2, h, w, generator=g) > 0.5
    gt_labels = torch.tensor([2, 0])
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    points = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=3.0)
    cost = matcher.cost_matrix(cls_logits, mask_logits, gt_labels, gt_masks, point_coords=points)

    expected = torch.zeros(q, 2)
    for i in range(q):
        for j in range(2):
            target = gt_masks[j].float()
            prob = mask_logits[i].sigmoid()
            bce = F.binary_cross_entropy_with_logits(mask_logits[i], target)
            dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
            p_class = cls_logits[i].softmax(-1)[gt_labels[j]]
            expected[i, j] = 2.0 * -p_class + 5.0 * bce + 3.0 * dice
    torch.testing.assert_close(cost, expected, atol=1e-5, rtol=1e-5)


def test_matcher_finds_the_planted_assignment():
    """Queries that predict exactly the ground truth (class and mask) are the ones matched to it."""
    h, w = 8, 12
    gt_masks = torch.zeros(3, h, w, dtype=torch.bool)
    gt_masks[0, :4] = True
    gt_masks[1, 4:, :6] = True
    gt_masks[2, 4:, 6:] = True
    gt_labels = torch.tensor([1, 0, 2])
    q = 6
    mask_logits = torch.full((q, h, w), -8.0)
    cls_logits = torch.zeros(q, 4)
    for query, gt in ((5, 0), (1, 1), (3, 2)):  # plant ground truth `gt` in query `query`
        mask_logits[query][gt_masks[gt]] = 8.0
        cls_logits[query, gt_labels[gt]] = 8.0
    query_idx, gt_idx = HungarianMatcher(num_points=500)(cls_logits, mask_logits, gt_labels, gt_masks)
    assert dict(zip(gt_idx.tolist(), query_idx.tolist())) == {0: 5, 1: 1, 2: 3}


def test_matcher_without_ground_truth():
    query_idx, gt_idx = HungarianMatcher()(
        torch.zeros(5, 3), torch.zeros(5, 4, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, 4)
    )
    assert query_idx.numel() == 0 and gt_idx.numel() == 0


def test_matcher_needs_a_cost():
    with pytest.raises(ValueError, match="cannot all be 0"):
        HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0)
