"""Geometric transforms: MMSegmentation's bookkeeping (img_shape, scale_factor, flip, pad), non-square."""

import cv2
import numpy as np
import pytest
from transform_samples import balanced, coordinate_sample, rng, stripes

from segaccel.data import (
    Compose,
    Pad,
    RandomChoiceResize,
    RandomCrop,
    RandomFlip,
    RandomResize,
    RandomRotate,
    Resize,
    ResizeShortestEdge,
    init_results,
)


@pytest.mark.parametrize(
    "scale, keep_ratio, img_shape",
    [
        ((90, 50), True, (50, 75)),  # factor min(90/45, 50/30) = 5/3: w 75, h 50
        ((50, 90), True, (50, 75)),  # mmcv: long edge <= max(scale), short edge <= min(scale)
        ((60, 60), True, (40, 60)),  # factor min(60/45, 60/30) = 4/3
        ((70, 20), False, (20, 70)),  # exact (w, h)
    ],
)
def test_resize_bookkeeping(scale, keep_ratio, img_shape):
    r = Resize(scale=scale, keep_ratio=keep_ratio)(coordinate_sample())
    h, w = img_shape
    assert r["img"].shape == (h, w, 3) and r["img"].dtype == np.uint8
    assert r["gt_seg_map"].shape == (h, w)
    assert r["img_shape"] == (h, w)
    assert r["ori_shape"] == (30, 45)
    assert r["scale_factor"] == pytest.approx((w / 45, h / 30))
    assert r["keep_ratio"] is keep_ratio


def test_resize_by_scale_factor_and_without_mask():
    r = Resize(scale_factor=0.5)(coordinate_sample(with_gt=False))
    assert r["img_shape"] == (15, 23)  # int(45 * 0.5 + 0.5) = 23
    assert "gt_seg_map" not in r


def test_mask_resize_is_nearest_and_image_resize_is_smooth():
    r = Resize(scale=(71, 31), keep_ratio=False)(coordinate_sample())
    assert set(np.unique(r["gt_seg_map"]).tolist()) == {0, 3, 7, 255}
    # bilinear: the x coordinate channel stays monotonic and spans the old range
    row = r["img"][10, :, 1].astype(int)
    assert (np.diff(row) >= 0).all() and row[0] == 0 and row[-1] == 44
    assert (r["img"][..., 2] == 7).all()  # a constant channel stays constant
    up = Resize(scale=(90, 60), keep_ratio=False)(coordinate_sample())
    gt = coordinate_sample()["gt_seg_map"]
    assert np.array_equal(up["gt_seg_map"][::2, ::2], gt) and np.array_equal(up["gt_seg_map"][1::2, 1::2], gt)


def test_resize_keeps_ignore_labels_when_downscaling():
    r = Resize(scale=(15, 10), keep_ratio=False)(coordinate_sample())
    assert 255 in np.unique(r["gt_seg_map"]) and set(np.unique(r["gt_seg_map"]).tolist()) <= {0, 3, 7, 255}


def test_random_resize_draws_the_ratio_from_rng():
    t = RandomResize(scale=(90, 60), ratio_range=(0.5, 2.0))
    ratio = np.random.default_rng(5).random() * 1.5 + 0.5
    scale = (int(90 * ratio + 0.5), int(60 * ratio + 0.5))
    r = t(coordinate_sample(), rng=np.random.default_rng(5))
    assert r["scale"] == scale
    factor = min(max(scale) / 45, min(scale) / 30)
    assert r["img_shape"] == (int(30 * factor + 0.5), int(45 * factor + 0.5))
    assert r["gt_seg_map"].shape == r["img_shape"]
    again = t(coordinate_sample(), rng=np.random.default_rng(5))
    assert np.array_equal(again["img"], r["img"])


def test_random_resize_between_two_scales():
    t = RandomResize(scale=[[40, 20], [80, 30]], keep_ratio=False)
    for seed in range(10):
        r = t(coordinate_sample(), rng=np.random.default_rng(seed))
        w, h = r["scale"]
        assert 40 <= w <= 80 and 20 <= h <= 30 and r["img_shape"] == (h, w)


def test_random_choice_resize_picks_each_scale_and_records_it():
    t = RandomChoiceResize(scales=[[90, 60], [45, 30], [60, 20]], keep_ratio=False)
    seen = {}
    for seed in range(30):
        r = t(coordinate_sample(), rng=rng(seed))
        w, h = r["scale"]
        assert r["img_shape"] == (h, w) and r["gt_seg_map"].shape == (h, w)
        assert r["scale_factor"] == pytest.approx((w / 45, h / 30))
        assert [[90, 60], [45, 30], [60, 20]][r["scale_idx"]] == [w, h]
        seen[r["scale_idx"]] = True
    assert sorted(seen) == [0, 1, 2]
    kept = RandomChoiceResize(scales=[[90, 50]])(coordinate_sample(), rng=rng(0))  # keeps ratio: 75x50
    assert kept["img_shape"] == (50, 75) and kept["keep_ratio"] is True
    assert set(np.unique(kept["gt_seg_map"]).tolist()) == {0, 3, 7, 255}  # nearest: 255 survives


@pytest.mark.parametrize(
    "shape, scale, max_size, expected_hw",
    [
        ((30, 45), 60, None, (60, 90)),  # landscape: short edge h -> 60
        ((45, 30), 60, None, (90, 60)),  # portrait: short edge w -> 60
        ((30, 45), 60, 80, (53, 80)),  # long edge 90 > 80: scaled by 80/90, rounded half up
        ((30, 45), (100, 60), None, (60, 90)),  # a pair: its smaller value
    ],
)
def test_resize_shortest_edge(shape, scale, max_size, expected_hw):
    r = ResizeShortestEdge(scale=scale, max_size=max_size)(coordinate_sample(*shape))
    h, w = expected_hw
    assert r["img_shape"] == (h, w) and r["img"].shape == (h, w, 3) and r["gt_seg_map"].shape == (h, w)
    assert r["ori_shape"] == shape
    assert r["scale_factor"] == pytest.approx((w / shape[1], h / shape[0]))
    assert r["scale"] == (w, h)


def test_random_crop_window_and_smaller_images():
    r = RandomCrop(crop_size=(20, 30))(coordinate_sample(), rng=np.random.default_rng(0))
    assert r["img"].shape == (20, 30, 3) and r["gt_seg_map"].shape == (20, 30) and r["img_shape"] == (20, 30)
    y0, x0 = int(r["img"][0, 0, 0]), int(r["img"][0, 0, 1])
    original = coordinate_sample()
    assert np.array_equal(r["img"], original["img"][y0 : y0 + 20, x0 : x0 + 30])
    assert np.array_equal(r["gt_seg_map"], original["gt_seg_map"][y0 : y0 + 20, x0 : x0 + 30])
    small = RandomCrop(crop_size=64)(coordinate_sample(), rng=np.random.default_rng(0))
    assert small["img_shape"] == (30, 45)  # smaller than the crop: the whole side is kept
    tall = RandomCrop(crop_size=(20, 64))(coordinate_sample(), rng=np.random.default_rng(1))
    assert tall["img_shape"] == (20, 45)


def test_random_crop_cat_max_ratio():
    # A 40x40 window is balanced (< 75% one class) for 19 of 61 offsets; with up to 10 retries
    # nearly every crop is.
    def balanced_crops(crop: RandomCrop) -> int:
        return sum(
            balanced(crop(stripes(), rng=np.random.default_rng(s))["gt_seg_map"], 0.75) for s in range(60)
        )

    capped = RandomCrop((40, 40), cat_max_ratio=0.75)
    assert balanced_crops(RandomCrop((40, 40))) < 30 and balanced_crops(capped) >= 55

    # ignore_index pixels do not count as a class: on a mask of 255 | 0 halves no window qualifies (one
    # class), so all 10 tries fail and the crop is the 11th window drawn. Counting 255 as a class would
    # accept an earlier mixed window instead. The image holds each pixel's column, so the crop says
    # which window was taken.
    def crop_of_ignored_half(ignore_index: int) -> tuple[dict, int]:
        sample = stripes()
        sample["gt_seg_map"] = np.where(sample["gt_seg_map"] == 1, 255, 0).astype(np.uint8)
        sample["img"][:] = np.arange(100, dtype=np.uint8)[None, :, None]
        crop = RandomCrop((40, 40), cat_max_ratio=0.75, ignore_index=ignore_index)
        r = crop(sample, rng=np.random.default_rng(0))
        return r, int(r["img"][0, 0, 0])

    draws = np.random.default_rng(0)
    windows = [capped._random_bbox((40, 100), draws) for _ in range(11)]
    r, x0 = crop_of_ignored_half(255)
    assert r["img_shape"] == (40, 40) and x0 == windows[10][2]
    assert np.array_equal(r["gt_seg_map"], np.where(np.arange(x0, x0 + 40) < 50, 255, 0)[None].repeat(40, 0))
    _, x0_if_counted = crop_of_ignored_half(-1)  # 255 counted as a class: an earlier, mixed window
    assert x0_if_counted != x0 and 20 < x0_if_counted < 40  # 255 on 25-75 % of it


@pytest.mark.parametrize(
    "direction, flipped", [("horizontal", lambda a: a[:, ::-1]), ("vertical", lambda a: a[::-1])]
)
def test_random_flip(direction, flipped):
    original = coordinate_sample()
    r = RandomFlip(prob=1.0, direction=direction)(coordinate_sample(), rng=np.random.default_rng(0))
    assert r["flip"] is True and r["flip_direction"] == direction
    assert np.array_equal(r["img"], flipped(original["img"]))
    assert np.array_equal(r["gt_seg_map"], flipped(original["gt_seg_map"]))
    assert r["img_shape"] == (30, 45) and r["img"].flags.c_contiguous
    kept = RandomFlip(prob=0.0, direction=direction)(coordinate_sample(), rng=np.random.default_rng(0))
    assert kept["flip"] is False and kept["flip_direction"] is None
    assert np.array_equal(kept["img"], original["img"])


def test_random_flip_probability():
    flip = RandomFlip(prob=0.5)
    flips = [flip(coordinate_sample(), rng=np.random.default_rng(s))["flip"] for s in range(200)]
    assert 70 < sum(flips) < 130


def test_rotate_by_90_degrees_with_auto_bound_is_a_clockwise_quarter_turn():
    original = coordinate_sample()
    r = RandomRotate(prob=1.0, degree=(90, 90), auto_bound=True)(coordinate_sample(), rng=rng(0))
    assert r["rotate_degree"] == 90.0 and r["img_shape"] == (45, 30)
    assert np.array_equal(r["img"], np.rot90(original["img"], k=-1))  # exact: no pixel is interpolated
    assert np.array_equal(r["gt_seg_map"], np.rot90(original["gt_seg_map"], k=-1))


def test_rotate_pads_uncovered_pixels_and_keeps_labels():
    original = coordinate_sample(40, 40)
    t = RandomRotate(prob=1.0, degree=(30, 30), pad_val=9, seg_pad_val=255)
    r = t(coordinate_sample(40, 40), rng=rng(0))
    assert r["img_shape"] == (40, 40) and r["gt_seg_map"].dtype == np.uint8
    # the corners are outside the rotated image: pad values there
    assert r["gt_seg_map"][0, 0] == 255 and r["img"][0, 0].tolist() == [9, 9, 9]
    # nearest neighbour: no new label appears, 255 stays 255
    assert set(np.unique(r["gt_seg_map"]).tolist()) <= set(np.unique(original["gt_seg_map"]).tolist())
    # the centre pixel stays (rotation about ((w - 1) / 2, (h - 1) / 2) = (19.5, 19.5))
    assert r["gt_seg_map"][20, 20] == original["gt_seg_map"][20, 20]


def test_rotate_probability_and_reproducibility():
    t = RandomRotate(prob=0.5, degree=20)
    assert t.degree == (-20.0, 20.0)
    outcomes = [t(coordinate_sample(), rng=rng(s))["rotate_degree"] for s in range(40)]
    rotated = [d for d in outcomes if d is not None]
    assert 10 < len(rotated) < 30 and all(-20 <= d <= 20 for d in rotated)
    a, b = t(coordinate_sample(), rng=rng(3)), t(coordinate_sample(), rng=rng(3))
    assert a["rotate_degree"] == b["rotate_degree"] and np.array_equal(a["img"], b["img"])
    kept = RandomRotate(prob=0.0, degree=20)(coordinate_sample(), rng=rng(0))
    assert kept["rotate_degree"] is None and np.array_equal(kept["img"], coordinate_sample()["img"])


def test_pad_to_size_right_and_bottom_with_255_labels():
    r = Pad(size=(40, 50), pad_val={"img": 5, "seg": 255})(coordinate_sample())  # size is (h, w)
    assert r["img"].shape == (40, 50, 3) and r["gt_seg_map"].shape == (40, 50)
    assert np.array_equal(r["img"][:30, :45], coordinate_sample()["img"]) and (r["img"][30:] == 5).all()
    assert (r["img"][:, 45:] == 5).all()
    assert (r["gt_seg_map"][30:] == 255).all() and (r["gt_seg_map"][:, 45:] == 255).all()
    assert r["pad_shape"] == r["img_shape"] == (40, 50) and r["ori_shape"] == (30, 45)
    assert r["pad_fixed_size"] == (40, 50) and r["pad_size_divisor"] is None


def test_pad_to_a_multiple_or_a_square_and_other_modes():
    assert Pad(size_divisor=16)(coordinate_sample())["img_shape"] == (32, 48)
    assert Pad(size_divisor=15)(coordinate_sample())["img_shape"] == (30, 45)  # already a multiple: unchanged
    assert Pad(pad_to_square=True)(coordinate_sample())["img_shape"] == (45, 45)
    assert Pad(pad_to_square=True, size_divisor=16)(coordinate_sample())["img_shape"] == (48, 48)
    reflect = Pad(size=(32, 47), padding_mode="reflect")(coordinate_sample())
    assert np.array_equal(reflect["img"][30, :45], coordinate_sample()["img"][28])  # row 30 mirrors row 28
    assert np.array_equal(reflect["img"][:30, 45], coordinate_sample()["img"][:, 43])  # column 45 mirrors 43
    assert (reflect["gt_seg_map"][30:] == 255).all()  # masks are always padded with the constant
    with pytest.raises(ValueError, match=r"larger than the pad size \(20, 50\)"):
        Pad(size=(20, 50))(coordinate_sample())


def test_pad_before_load_annotations_leaves_labels_alone():
    deferred = init_results(coordinate_sample()["img"], coordinate_sample()["gt_seg_map"], defer_gt=True)
    r = Compose([Pad(size=(32, 48)), {"type": "LoadAnnotations"}])(deferred)
    assert r["img_shape"] == (32, 48) and r["gt_seg_map"].shape == (30, 45)


@pytest.mark.parametrize(
    "transform",
    [
        RandomResize((60, 40), ratio_range=(0.5, 2.0)),
        RandomChoiceResize(scales=[[60, 40]]),
        RandomCrop(10),
        RandomFlip(),
        RandomRotate(prob=1.0, degree=10),
    ],
)
def test_random_transforms_need_an_rng(transform):
    with pytest.raises(ValueError, match="rng"):
        transform(coordinate_sample())


def test_resize_is_mmsegmentations_test_resize():
    # MMSegmentation 1.2.2's predict path on a 300x457 image with Resize(scale=(2048, 512), keep_ratio=True)
    # recorded img_shape (512, 780) and scale_factor (1.7067833698030634, 1.7066666666666668) (w, h);
    # the pixels are mmcv.imresize's: cv2.resize(img, (780, 512), INTER_LINEAR).
    img = np.random.default_rng(0).integers(0, 256, (300, 457, 3), dtype=np.uint8)
    r = Resize(scale=(2048, 512), keep_ratio=True)(init_results(img))
    assert r["img_shape"] == (512, 780) and r["ori_shape"] == (300, 457)
    assert r["scale_factor"] == (1.7067833698030634, 1.7066666666666668)
    expected = cv2.resize(img, (780, 512), interpolation=cv2.INTER_LINEAR)
    assert np.abs(r["img"].astype(int) - expected).max() == 0


def test_the_training_pipeline_keeps_image_and_mask_aligned():
    # Blocks of labels; the image paints each label its own colour. After resizing, cropping, flipping
    # and rotating, every pixel inside a block (its 5x5 neighbourhood one label, away from the crop's
    # border, where the neighbours are cut off) still has the colour of its label: exactly after resize,
    # crop and flip; after a rotation the closest of the palette (warpAffine's bilinear and nearest
    # quantise the coordinates differently: a few pixels by a level).
    palette = np.array([[200, 10, 10], [10, 200, 10], [10, 10, 200], [120, 120, 0]], np.uint8)
    blocks = np.random.default_rng(4).integers(0, 4, (6, 9))
    gt = np.kron(blocks, np.ones((10, 10), np.int64)).astype(np.uint8)
    pipeline = Compose(
        [
            {"type": "RandomResize", "scale": [90, 60], "ratio_range": [0.5, 2.0]},
            {"type": "RandomCrop", "crop_size": [40, 56], "cat_max_ratio": 0.75},
            {"type": "RandomFlip", "prob": 0.5, "direction": ["horizontal", "vertical"]},
            {"type": "RandomRotate", "prob": 0.5, "degree": 25, "seg_pad_val": 255},
        ]
    )
    checked, flipped = 0, set()
    for seed in range(24):
        r = pipeline(init_results(palette[gt], gt), rng=np.random.default_rng(seed))
        img, seg = r["img"], r["gt_seg_map"]
        assert img.shape[:2] == seg.shape == r["img_shape"]
        flipped.add(r["flip_direction"])
        window = np.lib.stride_tricks.sliding_window_view(np.pad(seg, 2, constant_values=255), (5, 5))
        inside = (window == seg[..., None, None]).all(axis=(-1, -2)) & (seg != 255)
        distances = np.abs(img[inside][:, None].astype(int) - palette[None]).sum(-1)
        assert np.array_equal(distances.argmin(1), seg[inside])
        if r["rotate_degree"] is None:
            assert np.array_equal(img[inside], palette[seg[inside]])
        checked += int(inside.sum())
    assert checked > 10000 and flipped == {None, "horizontal", "vertical"}
