"""Array kernels of the transforms: resize, crop, flip, rotate and colour conversions.

Plain functions on numpy arrays ((H, W, C) images, (H, W) label maps), without results dicts or
randomness, so that each can be tested against the library call it mirrors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
FLIP_DIRECTIONS = ("horizontal", "vertical", "diagonal")


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
    """Resize an (H, W, C) or (H, W) image to `size_hw` with torch's kernels.

    Bilinear/bicubic use `align_corners=False` without antialiasing, like OpenCV's `cv2.resize`
    (MMSegmentation's default backend). uint8 images go through torch's fixed-point uint8
    kernels, whose results do not depend on the number of threads, so a sample is augmented
    identically in the main process and in a DataLoader worker.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if tuple(img.shape[:2]) == tuple(size_hw):
        return img
    squeeze = img.ndim == 2
    arr = img[..., None] if squeeze else img
    # (1, C, H, W) in channels-last memory: no transposing copies on the way in or out
    x = torch.from_numpy(arr.astype(np.uint8 if img.dtype == np.uint8 else np.float32)).permute(2, 0, 1)[None]
    kwargs = {"align_corners": False} if interpolation in ("bilinear", "bicubic") else {}
    out = F.interpolate(x, size=tuple(size_hw), mode=interpolation, **kwargs)[0].permute(1, 2, 0)
    out = np.ascontiguousarray(out.numpy().astype(img.dtype))
    return out[..., 0] if squeeze else out


def resize_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) label map to `size_hw` by nearest neighbour (only existing labels survive)."""
    if tuple(mask.shape[:2]) == tuple(size_hw):
        return mask
    # uint8 as is; other integers as float64, which holds every int32 exactly (nearest only copies values)
    x = torch.from_numpy(mask.astype(np.uint8 if mask.dtype == np.uint8 else np.float64))
    out = F.interpolate(x[None, None], size=tuple(size_hw), mode="nearest")[0, 0]
    return out.numpy().astype(mask.dtype)


def label_counts(seg: np.ndarray, ignore_index: int) -> np.ndarray:
    """Pixel count of each label present in `seg`, `ignore_index` left out (bincount: no sorting)."""
    if seg.dtype == np.uint8 or (np.issubdtype(seg.dtype, np.integer) and seg.size and seg.min() >= 0):
        counts = np.bincount(seg.ravel(), minlength=ignore_index + 1 if 0 <= ignore_index < 65536 else 0)
        if 0 <= ignore_index < len(counts):
            counts[ignore_index] = 0
        return counts[counts > 0]
    labels, counts = np.unique(seg, return_counts=True)
    return counts[labels != ignore_index]


def crop(arr: np.ndarray, bbox: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = bbox
    return arr[y0:y1, x0:x1, ...]


def flip_array(arr: np.ndarray, direction: str) -> np.ndarray:
    """A contiguous copy of `arr` (H, W, ...) flipped left-right, up-down, or both ("diagonal")."""
    if direction == "horizontal":
        out = arr[:, ::-1]
    elif direction == "vertical":
        out = arr[::-1]
    elif direction == "diagonal":
        out = arr[::-1, ::-1]
    else:
        raise ValueError(f"flip direction must be one of {FLIP_DIRECTIONS}, got {direction!r}")
    return np.ascontiguousarray(out)


def _index_to_normalized(h: int, w: int) -> np.ndarray:
    """3x3 matrix taking pixel-index coordinates (x, y, 1) to `grid_sample`'s align_corners=False ones."""
    return np.array([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]])


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

    mmcv.imrotate's geometry: about `center` (x, y) in pixel coordinates, default the image centre
    ((w - 1) / 2, (h - 1) / 2); with `auto_bound` the output grows to hold the whole rotated image.
    Uncovered pixels get `pad_val` (image) and `seg_pad_val` (mask). Uses torch's `grid_sample`.
    """
    h, w = img.shape[:2]
    theta = np.deg2rad(degree)
    cos, sin = np.cos(theta), np.sin(theta)
    c_in = np.array(center if center is not None else ((w - 1) * 0.5, (h - 1) * 0.5), dtype=np.float64)
    out_h, out_w = h, w
    c_out = c_in
    if auto_bound:
        new_w, new_h = h * abs(sin) + w * abs(cos), h * abs(cos) + w * abs(sin)
        c_out = c_in + np.array([(new_w - w) * 0.5, (new_h - h) * 0.5])
        out_w, out_h = int(np.round(new_w)), int(np.round(new_h))
    # output pixel p -> input pixel R(-degree) (p - c_out) + c_in  (y points down: +degree is clockwise)
    inverse = np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])
    to_out = np.array([[1.0, 0.0, -c_out[0]], [0.0, 1.0, -c_out[1]], [0.0, 0.0, 1.0]])
    from_in = np.array([[1.0, 0.0, c_in[0]], [0.0, 1.0, c_in[1]], [0.0, 0.0, 1.0]])
    pixel_map = from_in @ inverse @ to_out
    normalized = _index_to_normalized(h, w) @ pixel_map @ np.linalg.inv(_index_to_normalized(out_h, out_w))
    grid = F.affine_grid(
        torch.from_numpy(normalized[:2]).float()[None], [1, 1, out_h, out_w], align_corners=False
    )

    channels = img.shape[2] if img.ndim == 3 else 1
    pad = np.broadcast_to(np.asarray(pad_val, dtype=np.float32), (channels,))
    x = torch.from_numpy(img.reshape(h, w, channels).astype(np.float32) - pad).permute(2, 0, 1)[None]
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    out = out.permute(1, 2, 0).numpy() + pad
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    out_img = np.ascontiguousarray(out.astype(img.dtype).reshape((out_h, out_w, *img.shape[2:])))

    out_mask = None
    if mask is not None:
        m = torch.from_numpy(mask.astype(np.float64))[None, None]
        ones = torch.ones_like(m)
        g = grid.double()
        rotated = F.grid_sample(m, g, mode="nearest", padding_mode="zeros", align_corners=False)[0, 0]
        inside = F.grid_sample(ones, g, mode="nearest", padding_mode="zeros", align_corners=False)[0, 0]
        out_mask = np.where(inside.numpy() > 0.5, rotated.numpy(), seg_pad_val).astype(mask.dtype)
    return out_img, out_mask


def rgb_to_hsv(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB uint8 → float32 HSV: hue in degrees [0, 360), saturation [0, 1], value [0, 255]."""
    rgb = img.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = np.maximum(np.maximum(r, g), b)
    delta = maxc - np.minimum(np.minimum(r, g), b)
    safe = np.where(delta > 0, delta, np.float32(1))
    hue = np.where(maxc == r, (g - b) / safe, np.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue *= 60
    hue[hue < 0] += 360
    hue[delta == 0] = 0
    sat = delta / np.where(maxc > 0, maxc, np.float32(1))
    return np.stack([hue, sat, maxc], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_hsv`, rounded to (H, W, 3) uint8 RGB.

    Channel n of (r, g, b) is `v - v * s * clip(min(k, 4 - k), 0, 1)` with `k = (n' + h / 60) mod 6`
    for n' = 5, 3, 1: the usual six-sector formula without branches.
    """
    sector = (hsv[..., 0] % 360) / 60
    value = hsv[..., 2]
    chroma = value * hsv[..., 1]
    out = np.empty(hsv.shape, np.uint8)
    k, mirrored = np.empty_like(sector), np.empty_like(sector)
    for channel, offset in enumerate((5, 3, 1)):
        np.add(sector, offset, out=k)
        np.remainder(k, 6, out=k)
        np.subtract(4, k, out=mirrored)
        np.minimum(k, mirrored, out=k)
        np.clip(k, 0, 1, out=k)
        k *= chroma
        np.subtract(value, k, out=k)
        np.rint(k, out=k)
        np.clip(k, 0, 255, out=k)
        out[..., channel] = k
    return out


def scale_saturation(img: np.ndarray, alpha: float) -> np.ndarray:
    """`img` with its HSV saturation multiplied by `alpha` (clipped to 1), hue and value kept, rounded.

    Computed in RGB: for a fixed hue and value every channel is `v - (v - c) * s' / s`, so no HSV
    round trip is needed; equal to `hsv_to_rgb` of the scaled `rgb_to_hsv` up to float rounding.
    """
    out = img.astype(np.float32)
    r, g, b = out[..., 0], out[..., 1], out[..., 2]
    maxc = np.maximum(np.maximum(r, g), b)
    delta = maxc - np.minimum(np.minimum(r, g), b)
    delta[delta == 0] = 1  # grey pixels: every channel equals v, any factor keeps them
    factor = np.minimum(np.float32(alpha), maxc / delta)
    out -= maxc[..., None]  # in place: v + (c - v) * factor
    out *= factor[..., None]
    out += maxc[..., None]
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """`img * alpha + beta`, clipped to [0, 255] and truncated to uint8 (as mmseg), through a lookup table."""
    table = np.clip(np.arange(256, dtype=np.float32) * np.float32(alpha) + np.float32(beta), 0, 255)
    return table.astype(np.uint8)[img]
