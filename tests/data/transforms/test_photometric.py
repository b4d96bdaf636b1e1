"""Pixel-value transforms: photometric distortion, grey conversion, cutout."""

import numpy as np
import pytest
from transform_samples import coordinate_sample, rng

from segaccel.data import Compose, PhotoMetricDistortion, RandomCutOut, RGB2Gray, init_results
from segaccel.data.transforms import hsv_to_rgb, rgb_to_hsv


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


def test_cutout_fills_the_recorded_boxes():
    t = RandomCutOut(prob=1.0, n_holes=3, cutout_shape=(5, 8), fill_in=(1, 2, 3), seg_fill_in=255)
    r = t(coordinate_sample(), rng=rng(4))
    original = coordinate_sample()
    assert len(r["cutout_boxes"]) == 3
    filled = np.zeros((30, 45), bool)
    for y0, y1, x0, x1 in r["cutout_boxes"]:
        assert y1 - y0 == min(5, 30 - y0) and x1 - x0 == min(8, 45 - x0)  # (h, w), clipped at the border
        filled[y0:y1, x0:x1] = True
    assert (r["img"][filled] == [1, 2, 3]).all() and (r["gt_seg_map"][filled] == 255).all()
    assert np.array_equal(r["img"][~filled], original["img"][~filled])
    assert np.array_equal(r["gt_seg_map"][~filled], original["gt_seg_map"][~filled])


def test_cutout_ratio_holes_range_and_probability():
    t = RandomCutOut(prob=1.0, n_holes=(1, 3), cutout_ratio=[(0.2, 0.1), (0.1, 0.2)])
    counts = set()
    for s in range(20):
        r = t(coordinate_sample(), rng=rng(s))
        counts.add(len(r["cutout_boxes"]))
        for y0, y1, x0, x1 in r["cutout_boxes"]:
            assert (y1 - y0, x1 - x0) in {
                (min(6, 30 - y0), min(4, 45 - x0)),
                (min(3, 30 - y0), min(9, 45 - x0)),
            }
        # no seg_fill_in: the mask is untouched
        assert np.array_equal(r["gt_seg_map"], coordinate_sample()["gt_seg_map"])
    assert counts == {1, 2, 3}
    none = RandomCutOut(prob=0.0, n_holes=2, cutout_shape=(4, 4))(coordinate_sample(), rng=rng(0))
    assert none["cutout_boxes"] == [] and np.array_equal(none["img"], coordinate_sample()["img"])


def test_rgb2gray_luma_and_channels():
    img = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    r = RGB2Gray()(init_results(img, np.zeros((1, 4), np.uint8)))
    expected = np.rint([255 * 0.299, 255 * 0.587, 255 * 0.114, 10 * 0.299 + 20 * 0.587 + 30 * 0.114])
    assert r["img"].shape == (1, 4, 3) and r["img"].dtype == np.uint8
    assert (r["img"][0, :, 0] == expected).all() and (r["img"][..., 0] == r["img"][..., 2]).all()
    one = Compose([RGB2Gray(out_channels=1), {"type": "PackSegInputs"}])(init_results(img))
    assert one["inputs"].shape == (1, 1, 4) and one["data_samples"].img_shape == (1, 4)


@pytest.mark.parametrize(
    "transform", [PhotoMetricDistortion(), RandomCutOut(prob=1.0, n_holes=1, cutout_shape=(2, 2))]
)
def test_random_transforms_need_an_rng(transform):
    with pytest.raises(ValueError, match="rng"):
        transform(coordinate_sample())
