"""Array kernels against the direct OpenCV / numpy calls MMSegmentation's mmcv makes: max difference 0."""

import cv2
import numpy as np
import pytest

from segaccel.data.transforms import (
    convert,
    flip_array,
    label_counts,
    linear_lut,
    resize_image,
    resize_mask,
    rotate_arrays,
)
from segaccel.data.transforms.functional import crop, nearest_indices

INTERP = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "bicubic": cv2.INTER_CUBIC}


def photo(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: interpolation differences would show."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(yy * 3 + xx) % 256, (xx * 5) % 256, (yy * 7) % 256][:channels], -1)
    noise = np.random.default_rng(seed).integers(0, 40, (h, w, channels))
    return ((base + noise) % 256).astype(np.uint8)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("size_hw", [(512, 780), (171, 263), (61, 40), (300, 458)])
def test_resize_image_is_mmcv_imresize(interpolation, size_hw):
    img = photo(300, 457)
    h, w = size_hw
    # mmcv.imresize(img, (w, h), interpolation=...) is cv2.resize(img, (w, h), interpolation=code)
    expected = cv2.resize(img, (w, h), interpolation=INTERP[interpolation])
    out = resize_image(img, size_hw, interpolation)
    assert out.dtype == np.uint8 and out.shape == (h, w, 3)
    assert np.abs(out.astype(int) - expected).max() == 0
    single = resize_image(img[..., :1], size_hw, interpolation)  # (H, W, 1) keeps its channel axis
    assert single.shape == (h, w, 1)
    assert np.array_equal(single[..., 0], resize_image(img[..., 0], size_hw, interpolation))


def test_resize_does_not_depend_on_opencvs_thread_count():
    # DataLoader workers run OpenCV without threads, the main process with several: the same pixels.
    img = photo(397, 531)
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(4)
        many = [resize_image(img, size) for size in ((800, 1063), (148, 165))]
        cv2.setNumThreads(0)
        none = [resize_image(img, size) for size in ((800, 1063), (148, 165))]
    finally:
        cv2.setNumThreads(threads)
    assert all(np.array_equal(a, b) for a, b in zip(many, none))


@pytest.mark.parametrize("size_hw", [(512, 780), (97, 131), (40, 61), (600, 915), (300, 457)])
def test_resize_mask_is_opencv_nearest_for_every_label_dtype(size_hw):
    mask = np.random.default_rng(1).integers(0, 150, (300, 457)).astype(np.int32)
    mask[:5] = 255
    h, w = size_hw
    expected = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(resize_mask(mask.astype(np.uint8), size_hw), expected)
    assert np.array_equal(resize_mask(mask, size_hw), expected)
    wide = resize_mask(mask.astype(np.int64) + 2**40, size_hw)  # no int64 in OpenCV: numpy, the same pixels
    assert wide.dtype == np.int64 and np.array_equal(wide - 2**40, expected)
    assert np.array_equal(nearest_indices(457, w), np.minimum(np.floor(np.arange(w) * (457 / w)), 456))


@pytest.mark.parametrize("direction, axes", [("horizontal", (1,)), ("vertical", (0,)), ("diagonal", (0, 1))])
def test_flip_is_numpy_flip_and_contiguous(direction, axes):
    img, mask = photo(30, 45), np.arange(30 * 45, dtype=np.int64).reshape(30, 45)
    for arr in (img, img[..., 0], mask):
        out = flip_array(arr, direction)
        assert np.array_equal(out, np.flip(arr, axes)) and out.flags.c_contiguous


def mmcv_imrotate(img, angle, border_value, interpolation, center=None, auto_bound=False):
    """mmcv.imrotate's body (mmcv 2.x), with OpenCV."""
    h, w = img.shape[:2]
    if center is None:
        center = ((w - 1) * 0.5, (h - 1) * 0.5)
    matrix = cv2.getRotationMatrix2D(center, -angle, 1.0)
    if auto_bound:
        cos, sin = np.abs(matrix[0, 0]), np.abs(matrix[0, 1])
        new_w, new_h = h * sin + w * cos, h * cos + w * sin
        matrix[0, 2] += (new_w - w) * 0.5
        matrix[1, 2] += (new_h - h) * 0.5
        w, h = int(np.round(new_w)), int(np.round(new_h))
    return cv2.warpAffine(img, matrix, (w, h), flags=INTERP[interpolation], borderValue=border_value)


@pytest.mark.parametrize(
    "degree, center, auto_bound",
    [(17.3, None, False), (-41.0, None, True), (90.0, None, True), (8.0, (10.0, 5.5), False)],
)
def test_rotate_is_mmcv_imrotate(degree, center, auto_bound):
    img = photo(30, 45)
    mask = np.random.default_rng(2).integers(0, 4, (30, 45)).astype(np.uint8)
    out_img, out_mask = rotate_arrays(img, mask, degree, 0, 255, center=center, auto_bound=auto_bound)
    assert np.array_equal(out_img, mmcv_imrotate(img, degree, 0, "bilinear", center, auto_bound))
    assert np.array_equal(out_mask, mmcv_imrotate(mask, degree, 255, "nearest", center, auto_bound))
    # a number pads every channel (mmcv passes it to OpenCV as (v, 0, 0, 0): only the first channel)
    padded, _ = rotate_arrays(img, None, degree, pad_val=9, center=center, auto_bound=auto_bound)
    assert np.array_equal(padded, mmcv_imrotate(img, degree, (9, 9, 9), "bilinear", center, auto_bound))


def test_label_counts_is_a_histogram_without_ignore():
    seg = np.random.default_rng(3).integers(0, 6, (40, 50)).astype(np.uint8)
    seg[:4] = 255
    labels, counts = np.unique(seg, return_counts=True)
    expected = counts[labels != 255]
    view = crop(seg, (0, 40, 5, 45))
    assert np.shares_memory(view, seg)  # crops are views
    assert np.array_equal(label_counts(seg, 255), expected)
    assert np.array_equal(label_counts(seg.astype(np.int64), 255), expected)
    assert np.array_equal(label_counts(view, 255), np.unique(view[view != 255], return_counts=True)[1])
    signed = seg.astype(np.int16) - 1  # -1..4 and 254: np.unique's path
    assert np.array_equal(label_counts(signed, 254), np.unique(signed, return_counts=True)[1][:-1])


@pytest.mark.parametrize("alpha, beta", [(1.0, 23.7), (1.0, -31.2), (0.61, 0.0), (1.43, 0.0), (1.0, 0.0)])
def test_linear_lookup_is_mmsegs_convert(alpha, beta):
    img = photo(33, 50)
    # PhotoMetricDistortion.convert in MMSegmentation: float32 multiply-add, clip, truncate
    expected = np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)
    assert np.array_equal(convert(img, alpha, beta), expected)
    assert np.array_equal(linear_lut(alpha, beta)[img], expected)
