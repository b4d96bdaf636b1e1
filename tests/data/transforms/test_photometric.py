"""Pixel-value transforms: photometric distortion, grey conversion, cutout."""

import cv2
import numpy as np
import pytest
from transform_samples import coordinate_sample, rng

from segaccel.data import Compose, PhotoMetricDistortion, RandomCutOut, RGB2Gray, init_results


class MMSegPhotoMetricDistortion:
    """MMSegmentation 1.x's PhotoMetricDistortion.transform on a BGR image, draws replayed from `params`."""

    @staticmethod
    def convert(img, alpha=1, beta=0):
        img = img.astype(np.float32) * alpha + beta
        img = np.clip(img, 0, 255)
        return img.astype(np.uint8)

    def __call__(self, img, params):
        if params["brightness"] is not None:
            img = self.convert(img, beta=params["brightness"])
        if params["contrast_first"] and params["contrast"] is not None:
            img = self.convert(img, alpha=params["contrast"])
        if params["saturation"] is not None:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)  # mmcv.bgr2hsv
            img[:, :, 1] = self.convert(img[:, :, 1], alpha=params["saturation"])
            img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
        if params["hue"] is not None:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            img[:, :, 0] = (img[:, :, 0].astype(int) + params["hue"]) % 180
            img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
        if not params["contrast_first"] and params["contrast"] is not None:
            img = self.convert(img, alpha=params["contrast"])
        return img


def mmseg_draws(rng, brightness_delta=32, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue_delta=18):
    """The draws of MMSegmentation's transform, in its order (numpy's randint/uniform on our generator)."""
    out = {"brightness": None, "contrast": None, "saturation": None, "hue": None}
    if rng.integers(2):
        out["brightness"] = rng.uniform(-brightness_delta, brightness_delta)
    mode = rng.integers(2)
    out["contrast_first"] = bool(mode == 1)
    if mode == 1 and rng.integers(2):
        out["contrast"] = rng.uniform(*contrast)
    if rng.integers(2):
        out["saturation"] = rng.uniform(*saturation)
    if rng.integers(2):
        out["hue"] = int(rng.integers(-hue_delta, hue_delta))
    if mode == 0 and rng.integers(2):
        out["contrast"] = rng.uniform(*contrast)
    return out


def photo(h: int = 37, w: int = 53) -> np.ndarray:
    """Every hue, saturation and brightness region, plus greys (s = 0) and saturated corners."""
    g = np.random.default_rng(11)
    img = g.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[:5] = g.integers(0, 256, (5, w, 1), dtype=np.uint8)  # greys
    img[-3:, -3:] = [255, 0, 0]
    return img


def test_photometric_distortion_is_mmsegmentations_on_fixed_draws():
    t, reference, img = PhotoMetricDistortion(), MMSegPhotoMetricDistortion(), photo()
    branches = set()
    for seed in range(64):
        params = t.draw(np.random.default_rng(seed))
        expected_params = mmseg_draws(np.random.default_rng(seed))
        assert {k: params[k] for k in expected_params} == expected_params  # the same draws, in MMSeg's order
        ours = t(init_results(img.copy()), rng=np.random.default_rng(seed))["img"]
        theirs = reference(img[..., ::-1].copy(), params)[..., ::-1]  # MMSegmentation works in BGR
        assert ours.dtype == np.uint8 and np.abs(ours.astype(int) - theirs).max() == 0
        branches.add(tuple(params[k] is not None for k in ("brightness", "contrast", "saturation", "hue")))
        branches.add(("contrast_first", params["contrast_first"]))
    assert len(branches) >= 14  # (nearly) every combination of steps was exercised


def test_photometric_on_device_records_the_draws_and_leaves_the_image():
    img = photo()
    deferred = PhotoMetricDistortion(on_device=True)(init_results(img.copy()), rng=np.random.default_rng(5))
    assert np.array_equal(deferred["img"], img)
    assert deferred["batch_augments"] == [PhotoMetricDistortion().draw(np.random.default_rng(5))]


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
