"""Transforms: MMSegmentation's bookkeeping (img_shape, scale_factor, flip) on non-square inputs."""

import numpy as np
import pytest
import torch

from segaccel.data import (
    Compose,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    RandomResize,
    Resize,
    init_results,
)
from segaccel.data.transforms import hsv_to_rgb, resize_image, rgb_to_hsv
from segaccel.registry import TRANSFORMS, ConfigError


def coordinate_sample(h: int = 30, w: int = 45, with_gt: bool = True) -> dict:
    """An image whose pixel (y, x) holds (y, x, 7) and a mask of 4 blocks with labels 0, 3, 7, 255."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([yy, xx, np.full_like(yy, 7)], axis=-1).astype(np.uint8)
    gt = np.zeros((h, w), np.uint8)
    gt[: h // 2, w // 2 :] = 3
    gt[h // 2 :, : w // 2] = 7
    gt[h // 2 :, w // 2 :] = 255
    return init_results(img, gt if with_gt else None, img_id="train/0")


def test_init_results_metainfo():
    r = coordinate_sample()
    assert r["ori_shape"] == r["img_shape"] == (30, 45)
    assert (r["scale_factor"], r["flip"], r["flip_direction"]) == ((1.0, 1.0), False, None)


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


def stripes() -> dict:
    """40x100: label 1 in columns [0, 50), label 0 in [50, 100)."""
    gt = np.zeros((40, 100), np.uint8)
    gt[:, :50] = 1
    return init_results(np.zeros((40, 100, 3), np.uint8), gt)


def balanced(gt: np.ndarray, ratio: float) -> bool:
    _, counts = np.unique(gt[gt != 255], return_counts=True)
    return len(counts) > 1 and counts.max() / counts.sum() < ratio


def test_random_crop_cat_max_ratio():
    # A 40x40 window is balanced (< 75% one class) for 19 of 61 offsets; with up to 10 retries
    # nearly every crop is.
    def balanced_crops(crop: RandomCrop) -> int:
        return sum(
            balanced(crop(stripes(), rng=np.random.default_rng(s))["gt_seg_map"], 0.75) for s in range(60)
        )

    capped = RandomCrop((40, 40), cat_max_ratio=0.75)
    assert balanced_crops(RandomCrop((40, 40))) < 30 and balanced_crops(capped) >= 55
    # ignore_index pixels do not count as a class: a mask of 0 and 255 never qualifies, a crop is still made
    sample = stripes()
    sample["gt_seg_map"] = np.where(sample["gt_seg_map"] == 1, 255, 0).astype(np.uint8)
    r = capped(sample, rng=np.random.default_rng(0))
    assert r["img_shape"] == (40, 40)


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


def test_hsv_round_trip():
    img = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    hsv = rgb_to_hsv(img)
    assert np.array_equal(hsv_to_rgb(hsv), img)
    hsv[..., 0] += 360.0  # a full turn of hue changes nothing
    assert np.array_equal(hsv_to_rgb(hsv), img)
    hsv[..., 1] = 0.0  # no saturation: grey at the max channel value
    grey = hsv_to_rgb(hsv)
    assert np.array_equal(grey, np.repeat(img.max(axis=-1, keepdims=True), 3, axis=-1))


def test_photometric_distortion_changes_only_the_image():
    t = PhotoMetricDistortion()
    original = coordinate_sample()
    outputs = []
    for seed in range(8):
        r = t(coordinate_sample(), rng=np.random.default_rng(seed))
        assert r["img"].shape == (30, 45, 3) and r["img"].dtype == np.uint8
        assert np.array_equal(r["gt_seg_map"], original["gt_seg_map"])
        outputs.append(r["img"])
    assert len({o.tobytes() for o in outputs}) > 4
    same = t(coordinate_sample(), rng=np.random.default_rng(3))
    assert np.array_equal(same["img"], outputs[3])
    assert "gt_seg_map" not in t(coordinate_sample(with_gt=False), rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    "transform",
    [RandomResize((60, 40), ratio_range=(0.5, 2.0)), RandomCrop(10), RandomFlip(), PhotoMetricDistortion()],
)
def test_random_transforms_need_an_rng(transform):
    with pytest.raises(ValueError, match="rng"):
        transform(coordinate_sample())


def test_compose_builds_from_config_and_is_reproducible():
    pipeline = Compose(
        [
            {"type": "RandomResize", "scale": [90, 60], "ratio_range": [0.5, 2.0]},
            {"type": "RandomCrop", "crop_size": [24, 32], "cat_max_ratio": 0.75},
            {"type": "RandomFlip", "prob": 0.5},
            {"type": "PhotoMetricDistortion"},
        ]
    )
    assert [type(t).__name__ for t in pipeline.transforms] == [
        "RandomResize",
        "RandomCrop",
        "RandomFlip",
        "PhotoMetricDistortion",
    ]
    a = pipeline(coordinate_sample(), rng=np.random.default_rng([0, 0, 1]))
    b = pipeline(coordinate_sample(), rng=np.random.default_rng([0, 0, 1]))
    c = pipeline(coordinate_sample(), rng=np.random.default_rng([0, 0, 2]))
    assert a["img_shape"] == (24, 32)
    assert np.array_equal(a["img"], b["img"]) and np.array_equal(a["gt_seg_map"], b["gt_seg_map"])
    assert not np.array_equal(a["img"], c["img"])
    with pytest.raises(ConfigError, match="RandomCrp"):
        Compose([{"type": "RandomCrp", "crop_size": 4}])


def test_every_transform_is_registered():
    for name in ("Compose", "LoadAnnotations", "Resize", "RandomResize", "RandomCrop", "RandomFlip"):
        assert name in TRANSFORMS
    assert "PhotoMetricDistortion" in TRANSFORMS and "PackSegInputs" in TRANSFORMS


def test_resize_does_not_depend_on_the_thread_count():
    # DataLoader workers run torch with one thread, the main process with several: same pixels.
    img = np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        many = [resize_image(img, size) for size in ((200, 263), (48, 65))]
        torch.set_num_threads(1)
        one = [resize_image(img, size) for size in ((200, 263), (48, 65))]
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(a, b) for a, b in zip(many, one))


def test_load_annotations_keeps_labels_out_of_earlier_transforms():
    original = coordinate_sample()
    deferred = init_results(original["img"], original["gt_seg_map"], defer_gt=True)
    assert "gt_seg_map" not in deferred
    r = Compose([{"type": "Resize", "scale": [90, 60]}, {"type": "LoadAnnotations"}])(deferred)
    assert r["img_shape"] == (60, 90)
    assert np.array_equal(r["gt_seg_map"], original["gt_seg_map"])  # (30, 45): never resized
    assert "pending_gt_seg_map" not in r
