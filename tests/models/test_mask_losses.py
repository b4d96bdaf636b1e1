"""Mask-classification losses: point sampling, the point losses against dense ones, the class loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segaccel.models.losses.mask_losses import (
    MaskClassificationLoss,
    dice_loss,
    point_sample,
    sample_class_masks,
    sigmoid_ce_loss,
    uncertain_point_coords,
)


def pixel_centres(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)


def test_point_sample_at_pixel_centres_is_exact():
    maps = torch.randn(2, 3, 5, 9)
    points = pixel_centres(5, 9)[None].expand(2, -1, -1)
    # float rounding of the normalised coordinates leaves at most ~1e-7 of a neighbour's value
    torch.testing.assert_close(point_sample(maps, points), maps.flatten(2), atol=1e-5, rtol=0)


def test_point_losses_equal_dense_losses_when_the_points_cover_every_pixel():
    g = torch.Generator().manual_seed(0)
    m, h, w = 3, 6, 10
    logits = torch.randn(m, h, w, generator=g) * 3
    targets = (torch.rand(m, h, w, generator=g) > 0.6).float()
    num_masks = 2.0
    loss = MaskClassificationLoss()
    points = pixel_centres(h, w)[None].expand(m, -1, -1)
    point_bce, point_dice = loss.mask_losses(logits, targets, torch.tensor(num_masks), point_coords=points)

    dense_bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean((1, 2)).sum()
    probs = logits.sigmoid()
    dense_dice = (
        1 - (2 * (probs * targets).sum((1, 2)) + 1) / (probs.sum((1, 2)) + targets.sum((1, 2)) + 1)
    ).sum()
    torch.testing.assert_close(point_bce, dense_bce / num_masks, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(point_dice, dense_dice / num_masks, atol=1e-5, rtol=1e-5)


def test_targets_at_another_resolution_are_sampled_at_the_same_points():
    """Predictions at 1/4 of the label size: a point at a prediction pixel centre reads the label there."""
    logits = torch.randn(1, 4, 4)
    target = torch.zeros(1, 16, 16)
    target[:, :8] = 1.0  # top half
    points = pixel_centres(4, 4)[None]
    bce, _ = MaskClassificationLoss().mask_losses(logits, target, torch.tensor(1.0), point_coords=points)
    expected_target = torch.zeros(1, 4, 4)
    expected_target[:, :2] = 1.0
    expected = F.binary_cross_entropy_with_logits(logits, expected_target)
    torch.testing.assert_close(bce, expected, atol=1e-6, rtol=1e-6)


def test_uncertain_points_come_from_the_uncertain_region():
    """With importance 1.0 every point is among the most uncertain (|logit| ~ 0) of the oversampled ones."""
    torch.manual_seed(0)
    logits = torch.full((2, 1, 32, 32), 10.0)
    logits[:, :, :, :8] = 0.0  # the left quarter is uncertain
    # ~7.5/32 of the 1000 oversampled points read exactly 0 (left of the last blended pixel centre)
    coords = uncertain_point_coords(logits, num_points=100, oversample_ratio=10.0, importance_sample_ratio=1)
    assert coords.shape == (2, 100, 2)
    assert (coords[..., 0] < 7.5 / 32).all()


def test_uncertain_points_mix_importance_and_random():
    torch.manual_seed(0)
    logits = torch.full((1, 1, 32, 32), 10.0)
    logits[..., :8] = 0.0
    coords = uncertain_point_coords(logits, 1000, oversample_ratio=12.0, importance_sample_ratio=0.75)
    assert coords.shape == (1, 1000, 2)
    assert (coords[0, :750, 0] < 7.5 / 32).all()  # the 750 importance points, from ~2800 exactly uncertain
    right = (coords[0, 750:, 0] > 0.5).float().mean().item()
    assert 0.35 < right < 0.65  # the 250 others uniform


def test_loss_functions_by_hand():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    targets = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum() / 4
    assert sigmoid_ce_loss(logits, targets, 4).item() == pytest.approx(bce.item())
    p = logits.sigmoid()
    d0 = 1 - (2 * (p[0] * targets[0]).sum() + 1) / (p[0].sum() + 2 + 1)
    d1 = 1 - (2 * (p[1] * targets[1]).sum() + 1) / (p[1].sum() + 1 + 1)
    assert dice_loss(logits, targets, 2).item() == pytest.approx(((d0 + d1) / 2).item())


def test_class_loss_weights_no_object():
    """Cross-entropy over all queries, unmatched ones labelled "no object" with weight 0.1 (weighted mean)."""
    g = torch.Generator().manual_seed(0)
    cls_logits = torch.randn(2, 4, 6, generator=g)  # 5 classes + no object
    gt_labels = [torch.tensor([3, 1]), torch.tensor([4])]
    indices = [(torch.tensor([2, 0]), torch.tensor([0, 1])), (torch.tensor([1]), torch.tensor([0]))]
    loss = MaskClassificationLoss(no_object_weight=0.1).class_loss(cls_logits, gt_labels, indices)
    targets = torch.tensor([[1, 5, 3, 5], [5, 4, 5, 5]])
    weights = torch.where(targets == 5, 0.1, 1.0)
    nll = -cls_logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]
    assert loss.item() == pytest.approx(((nll * weights).sum() / weights.sum()).item(), rel=1e-6)


def test_loss_without_ground_truth_keeps_the_graph():
    criterion = MaskClassificationLoss(num_points=64)
    cls_logits = torch.randn(1, 5, 4, requires_grad=True)
    mask_logits = torch.randn(1, 5, 8, 8, requires_grad=True)
    losses = criterion(cls_logits, mask_logits, [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, 32, 32)])
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice"].item() == 0.0
    assert losses["loss_cls"].item() > 0  # every query should say "no object"
    sum(losses.values()).backward()
    assert mask_logits.grad is not None and cls_logits.grad.abs().sum() > 0


def test_loss_weights_scale_each_term():
    torch.manual_seed(0)
    cls_logits, mask_logits = torch.randn(1, 5, 4), torch.randn(1, 5, 8, 8)
    labels, masks = [torch.tensor([0, 2])], [torch.rand(2, 32, 32) > 0.5]
    torch.manual_seed(1)
    unweighted = MaskClassificationLoss(class_weight=1, mask_weight=1, dice_weight=1)
    one = unweighted(cls_logits, mask_logits, labels, masks)
    torch.manual_seed(1)
    weighted = MaskClassificationLoss()(cls_logits, mask_logits, labels, masks)  # 2, 5, 5
    for name, factor in (("loss_cls", 2.0), ("loss_mask", 5.0), ("loss_dice", 5.0)):
        assert weighted[name].item() == pytest.approx(factor * one[name].item(), rel=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_class_masks_read_from_the_label_map_equal_point_sampled_masks(shared):
    """The targets of semantic segmentation read at the points from the label map equal `point_sample`
    of the full-resolution binary masks (bilinear between pixels, zero outside the map)."""
    g = torch.Generator().manual_seed(0)
    label_map = torch.randint(0, 5, (13, 17), generator=g)
    label_map[:3] = 255
    classes = torch.tensor([0, 2, 4])
    masks = (label_map[None] == classes[:, None, None]).float()
    points = torch.rand(40, 2, generator=g) * 1.2 - 0.1  # some outside [0, 1]
    if shared:
        expected = point_sample(masks[:, None], points[None].expand(3, -1, -1))[:, 0]
    else:
        points = torch.rand(3, 40, 2, generator=g) * 1.2 - 0.1
        expected = point_sample(masks[:, None], points)[:, 0]
    read = sample_class_masks(label_map, classes, points).float()
    torch.testing.assert_close(read, expected, atol=1e-5, rtol=0)


def test_loss_from_label_maps_equals_loss_from_masks():
    torch.manual_seed(0)
    cls_logits, mask_logits = torch.randn(2, 6, 5), torch.randn(2, 6, 8, 12)
    label_maps = [torch.randint(0, 4, (32, 48)) for _ in range(2)]
    labels = [torch.unique(m) for m in label_maps]
    masks = [m[None] == c[:, None, None] for m, c in zip(label_maps, labels)]
    matcher = {"type": "HungarianMatcher", "num_points": 300}
    criterion = MaskClassificationLoss(num_points=300, matcher=matcher)
    torch.manual_seed(1)
    from_masks = criterion(cls_logits, mask_logits, labels, masks)
    torch.manual_seed(1)
    from_maps = criterion(cls_logits, mask_logits, labels, gt_sem_seg=label_maps)
    for name in from_masks:
        torch.testing.assert_close(from_maps[name], from_masks[name], atol=1e-5, rtol=1e-5)
