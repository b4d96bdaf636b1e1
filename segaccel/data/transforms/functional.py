"""Array kernels of the transforms: resize, crop, flip, rotate and colour look-ups, on OpenCV.

Plain functions on numpy arrays ((H, W, C) images, (H, W) label maps), without results dicts or
randomness. Each calls OpenCV as MMSegmentation's mmcv does (`cv2.resize`, `cv2.warpAffine`,
`cv2.cvtColor`), so the uint8 pixels are MMSegmentation's; tests compare each with the direct call.
OpenCV runs the kernels single-threaded inside DataLoader workers (`segaccel.data.loader`).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
CV2_INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
FLIP_DIRECTIONS = ("horizontal", "vertical", "diagonal")
CV2_FLIP_CODES = {"horizontal": 1, "vertical": 0, "diagonal": -1}
# dtypes OpenCV's resize/warp/flip take (others go through the numpy fallbacks below)
CV2_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64)


def _cv2_ok(arr: np.ndarray) -> bool:
    channels = arr.shape[2] if arr.ndim == 3 else 1
    return arr.dtype in CV2_DTYPES and arr.ndim in (2, 3) and channels <= 4


def _restore_channels(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    """OpenCV returns (H, W) for an (H, W, 1) input: give the channel axis back."""
    return out[..., None] if like.ndim == 3 and out.ndim == 2 else out


def scale_size(size_wh: tuple[int, int], scale: float | tuple[float, float]) -> tuple[int, int]:
    """`(w, h)` multiplied by `scale` and rounded half up (mmcv's `_scale_size`), at least 1 pixel.

    (mmcv rounds a thin image's short side to 0 and the resize then fails.)
    """
    if isinstance(scale, (int, float)):
        scale = (scale, scale)
    w, h = size_wh
    return max(1, int(w * float(scale[0]) + 0.5)), max(1, int(h * float(scale[1]) + 0.5))


def rescale_size(size_wh: tuple[int, int], scale: tuple[int, int] | float) -> tuple[int, int]:
    """The `(w, h)` that keeps the aspect ratio and fits `scale` (mmcv's `rescale_size`).

    With a pair, the long edge is at most `max(scale)` and the short edge at most `min(scale)`
    (orientation-free, as in mmcv); with a number, it is the scale factor.
    """
    w, h = size_wh
    if isinstance(scale, (int, float)):
        factor = float(scale)
    else:
        factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return scale_size((w, h), factor)


def resize_image(img: np.ndarray, size_hw: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize an (H, W, C) or (H, W) image to `size_hw`: `cv2.resize` exactly as `mmcv.imresize` calls it.

    Bilinear/bicubic are OpenCV's (half-pixel centres, no antialiasing, fixed-point on uint8): the
    same pixels as MMSegmentation. The result does not depend on OpenCV's thread count.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if tuple(img.shape[:2]) == tuple(size_hw):
        return img
    if not _cv2_ok(img):
        raise ValueError(f"resize_image: expected an (H, W[, C<=4]) image, got {img.dtype} {img.shape}")
    h, w = size_hw
    return _restore_channels(cv2.resize(img, (w, h), interpolation=CV2_INTERPOLATIONS[interpolation]), img)


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """The source index of each output index in OpenCV's INTER_NEAREST: `min(floor(i * in / out), in - 1)`."""
    ratio = 1.0 / (size_out / size_in)  # computed as OpenCV does (ifx = 1 / inv_scale_x)
    return np.minimum(np.floor(np.arange(size_out) * ratio).astype(np.int64), size_in - 1)


def resize_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) label map to `size_hw` by nearest neighbour (only existing labels survive).

    `cv2.resize(INTER_NEAREST)` as mmcv calls it for masks; label dtypes OpenCV lacks (int64, ...) take
    the same indices through numpy.
    """
    if tuple(mask.shape[:2]) == tuple(size_hw):
        return mask
    h, w = size_hw
    if _cv2_ok(mask):
        return _restore_channels(cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST), mask)
    rows = nearest_indices(mask.shape[0], h)
    cols = nearest_indices(mask.shape[1], w)
    return mask[rows[:, None], cols[None, :]]


def label_counts(seg: np.ndarray, ignore_index: int) -> np.ndarray:
    """Pixel count of each label present in `seg`, `ignore_index` left out (a histogram: no sorting).

    uint8 masks (the usual case) go through `cv2.calcHist`, other non-negative integers `np.bincount`.
    """
    if seg.dtype == np.uint8 and seg.ndim == 2:
        counts = cv2.calcHist([seg], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    elif np.issubdtype(seg.dtype, np.integer) and seg.size and seg.min() >= 0:
        counts = np.bincount(seg.ravel(), minlength=ignore_index + 1 if 0 <= ignore_index < 65536 else 0)
    else:
        labels, counts = np.unique(seg, return_counts=True)
        return counts[labels != ignore_index]
    if 0 <= ignore_index < len(counts):
        counts[ignore_index] = 0
    return counts[counts > 0]


def crop(arr: np.ndarray, bbox: tuple[int, int, int, int]) -> np.ndarray:
    """The (y0, y1, x0, x1) window of `arr`: a view (no copy)."""
    y0, y1, x0, x1 = bbox
    return arr[y0:y1, x0:x1, ...]


def flip_array(arr: np.ndarray, direction: str) -> np.ndarray:
    """`arr` (H, W, ...) flipped left-right, up-down, or both ("diagonal"), C-contiguous.

    `cv2.flip` writes the flipped array in one memcpy-speed pass. (A numpy view would be free here,
    but every OpenCV kernel after it, and numpy's own copies of it, pay ~10x a copy for the
    reversed strides, which costs more than the flip.)
    """
    if direction not in FLIP_DIRECTIONS:
        raise ValueError(f"flip direction must be one of {FLIP_DIRECTIONS}, got {direction!r}")
    if _cv2_ok(arr):
        return _restore_channels(cv2.flip(arr, CV2_FLIP_CODES[direction]), arr)
    axes = {"horizontal": (1,), "vertical": (0,), "diagonal": (0, 1)}[direction]
    return np.ascontiguousarray(np.flip(arr, axes))


def rotation_matrix(
    hw: tuple[int, int], degree: float, center: tuple[float, float] | None = None, auto_bound: bool = False
) -> tuple[np.ndarray, tuple[int, int]]:
    """`mmcv.imrotate`'s 2x3 affine matrix and output `(w, h)`: clockwise by `degree` about `center` (x, y).

    The default centre is ((w - 1) / 2, (h - 1) / 2); `auto_bound` grows the output to hold the
    whole rotated image.
    """
    h, w = hw
    if center is None:
        center = ((w - 1) * 0.5, (h - 1) * 0.5)
    matrix = cv2.getRotationMatrix2D(tuple(float(c) for c in center), -degree, 1.0)
    if auto_bound:
        cos, sin = np.abs(matrix[0, 0]), np.abs(matrix[0, 1])
        new_w, new_h = h * sin + w * cos, h * cos + w * sin
        matrix[0, 2] += (new_w - w) * 0.5
        matrix[1, 2] += (new_h - h) * 0.5
        w, h = int(np.round(new_w)), int(np.round(new_h))
    return matrix, (w, h)


def rotate_arrays(
    img: np.ndarray,
    mask: np.ndarray | None,
    degree: float,
    pad_val: float | Sequence[float] = 0,
    seg_pad_val: int = 255,
    center: tuple[float, float] | None = None,
    auto_bound: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rotate `img` (H, W, C) bilinearly and `mask` (H, W) by nearest neighbour, clockwise by `degree`.

    `cv2.warpAffine` with mmcv.imrotate's matrix (`rotation_matrix`), constant border: uncovered pixels
    get `pad_val` (image; a number fills every channel, where mmcv's scalar fills only the first) and
    `seg_pad_val` (mask). The pixels follow the installed OpenCV: 4.x and 5.x interpolate warps with
    different precision.
    """
    matrix, (out_w, out_h) = rotation_matrix(img.shape[:2], degree, center, auto_bound)
    channels = img.shape[2] if img.ndim == 3 else 1
    pad = np.broadcast_to(np.asarray(pad_val, dtype=np.float64), (channels,))
    border = tuple(float(v) for v in pad) + (0.0,) * (4 - channels) if channels <= 4 else None
    if border is None or not _cv2_ok(img):
        raise ValueError(f"rotate_arrays: expected an (H, W[, C<=4]) image, got {img.dtype} {img.shape}")
    size, constant = (out_w, out_h), cv2.BORDER_CONSTANT
    out = cv2.warpAffine(img, matrix, size, flags=cv2.INTER_LINEAR, borderMode=constant, borderValue=border)
    out_img = _restore_channels(out, img)
    out_mask = None
    if mask is not None:
        source = mask if _cv2_ok(mask) else mask.astype(np.float64)  # float64 holds every int32 label exactly
        nearest, border = cv2.INTER_NEAREST, float(seg_pad_val)
        out = cv2.warpAffine(source, matrix, size, flags=nearest, borderMode=constant, borderValue=border)
        out_mask = out.astype(mask.dtype, copy=False)
    return out_img, out_mask


# --- colour ------------------------------------------------------------------------------------------


def linear_lut(alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """The 256-entry uint8 table of `v * alpha + beta` clipped to [0, 255] and truncated, in float32.

    MMSegmentation's `PhotoMetricDistortion.convert` computes exactly this per pixel
    (`img.astype(float32) * alpha + beta`, clip, `astype(uint8)`); a table gives the same values.
    """
    table = np.arange(256, dtype=np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(table, 0, 255).astype(np.uint8)


def convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """`img * alpha + beta`, clipped to [0, 255] and truncated to uint8 (MMSegmentation's `convert`)."""
    return apply_lut(img, linear_lut(alpha, beta))


def apply_lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    """`table[img]` for a uint8 image: one (256,) table for every channel or a (256, C) one per channel."""
    lut = table.reshape(256, 1, -1) if table.ndim == 2 else table
    return _restore_channels(cv2.LUT(img, lut), img)


def rgb_to_hsv(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB uint8 → HSV uint8 in OpenCV's units (H in [0, 180) half-degrees, S and V in [0, 255])."""
    return cv2.cvtColor(img, cv2.COLOR_RGB2HSV)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_hsv` (OpenCV's HSV→RGB, rounded to uint8)."""
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


_IDENTITY = np.arange(256, dtype=np.uint8)


def saturation_lut(alpha: float) -> np.ndarray:
    """The (256, 3) HSV table that multiplies S by `alpha` (clipped, truncated) and keeps H and V."""
    return np.stack([_IDENTITY, linear_lut(alpha), _IDENTITY], axis=1)


def hue_lut(delta: int) -> np.ndarray:
    """The (256, 3) HSV table that turns H by `delta` half-degrees (mod 180) and keeps S and V."""
    hue = ((np.arange(256) + int(delta)) % 180).astype(np.uint8)
    return np.stack([hue, _IDENTITY, _IDENTITY], axis=1)


def adjust_hsv(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    """RGB uint8 → HSV, `table` (256, 3) applied per channel, → RGB: one of MMSegmentation's HSV steps."""
    return hsv_to_rgb(apply_lut(rgb_to_hsv(img), table))
