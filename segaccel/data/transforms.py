"""Per-sample transforms with MMSegmentation 1.x semantics and argument names.

A transform is a callable `t(results, rng=None) -> results` on one sample held in a dict:
`img` (H, W, 3) uint8 RGB, optional `gt_seg_map` (H, W) integer labels, and metainfo
(`img_shape`, `ori_shape` (h, w); `scale_factor` (w_scale, h_scale); `flip`, `flip_direction`).
Random transforms draw only from `rng`, a generator the dataset seeds per sample from
(seed, epoch, index), so augmentation does not depend on workers or processes.

Every shape is (h, w), except `scale` in `Resize`/`RandomResize`, which is (w, h) as in
MMSegmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segaccel.registry import TRANSFORMS, ConfigError

Results = dict[str, Any]

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


def init_results(
    img: np.ndarray,
    gt_seg_map: np.ndarray | None = None,
    img_id: str | None = None,
    img_path: str | None = None,
    reduce_zero_label: bool = False,
    defer_gt: bool = False,
) -> Results:
    """The results dict a pipeline starts from: the image, its mask (if any) and initial metainfo.

    With `defer_gt` the mask is held back under `pending_gt_seg_map` until `LoadAnnotations`.
    """
    shape = (int(img.shape[0]), int(img.shape[1]))
    results: Results = {
        "img": img,
        "img_id": img_id,
        "img_path": img_path,
        "ori_shape": shape,
        "img_shape": shape,
        "scale_factor": (1.0, 1.0),
        "flip": False,
        "flip_direction": None,
        "reduce_zero_label": reduce_zero_label,
    }
    if gt_seg_map is not None:
        results[PENDING_GT_KEY if defer_gt else "gt_seg_map"] = gt_seg_map
    return results


def _require_rng(rng: np.random.Generator | None, name: str) -> np.random.Generator:
    if rng is None:
        raise ValueError(
            f"{name} is a random transform and must be called with rng=np.random.Generator "
            "(SegDataset seeds one per sample from (seed, epoch, index)); got rng=None"
        )
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _pair(value: Any, name: str, what: str) -> tuple[int, int]:
    """`value` as a pair of positive ints (an int means the same for both)."""
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    if not (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) for v in value)
    ):
        raise ValueError(f"{name}: {what} must be an int or a pair of ints, got {value!r}")
    if min(value) <= 0:
        raise ValueError(f"{name}: {what} must be positive, got {value!r}")
    return int(value[0]), int(value[1])


# --- resizing -------------------------------------------------------------------------------------


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


def _apply_resize(results: Results, scale: tuple[int, int], keep_ratio: bool, interpolation: str) -> Results:
    """Resize `img` (and `gt_seg_map`) to `scale` (w, h) and record the metainfo, as mmcv's Resize."""
    img = results["img"]
    h, w = img.shape[:2]
    new_w, new_h = rescale_size((w, h), scale) if keep_ratio else scale
    results["img"] = resize_image(img, (new_h, new_w), interpolation)
    if results.get("gt_seg_map") is not None:
        results["gt_seg_map"] = resize_mask(results["gt_seg_map"], (new_h, new_w))
    results["img_shape"] = (new_h, new_w)
    results["scale"] = (int(scale[0]), int(scale[1]))
    results["scale_factor"] = (new_w / w, new_h / h)
    results["keep_ratio"] = keep_ratio
    return results


class Resize:
    """Resize to `scale` (w, h); with `keep_ratio`, the largest size that fits it (mmcv.imrescale).

    The image is resized with `interpolation` (bilinear), the mask with nearest neighbour.
    `scale_factor` instead of `scale` multiplies the input size. Records `img_shape`,
    `scale_factor` (w_scale, h_scale) and `keep_ratio`.
    """

    def __init__(
        self,
        scale: int | Sequence[int] | None = None,
        scale_factor: float | Sequence[float] | None = None,
        keep_ratio: bool = True,
        interpolation: str = "bilinear",
    ) -> None:
        if (scale is None) == (scale_factor is None):
            raise ValueError(
                f"Resize: give exactly one of scale or scale_factor, got {scale=}, {scale_factor=}"
            )
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"Resize: interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self.scale = _pair(scale, "Resize", "scale (w, h)") if scale is not None else None
        self.scale_factor = scale_factor
        self.keep_ratio = keep_ratio
        self.interpolation = interpolation

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        if self.scale is not None:
            scale = self.scale
        else:
            h, w = results["img"].shape[:2]
            factor = self.scale_factor
            scale = scale_size((w, h), tuple(factor) if isinstance(factor, Sequence) else factor)
        return _apply_resize(results, scale, self.keep_ratio, self.interpolation)

    def __repr__(self) -> str:
        return (
            f"Resize(scale={self.scale}, scale_factor={self.scale_factor}, keep_ratio={self.keep_ratio}, "
            f"interpolation={self.interpolation!r})"
        )


class RandomResize:
    """Resize to a random scale, as mmcv's RandomResize.

    `scale` (w, h) with `ratio_range` (lo, hi): the scale times a ratio drawn uniformly in the
    range. `scale` as two (w, h) pairs without `ratio_range`: each edge drawn uniformly between them.
    Then resized like `Resize(scale, keep_ratio)`.
    """

    def __init__(
        self,
        scale: Sequence[int] | Sequence[Sequence[int]],
        ratio_range: Sequence[float] | None = None,
        keep_ratio: bool = True,
        interpolation: str = "bilinear",
    ) -> None:
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"RandomResize: interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}"
            )
        if ratio_range is not None:
            if len(ratio_range) != 2 or not 0 < ratio_range[0] <= ratio_range[1]:
                raise ValueError(
                    f"RandomResize: ratio_range must be (lo, hi) with 0 < lo <= hi, got {ratio_range!r}"
                )
            self.scale: Any = _pair(scale, "RandomResize", "scale (w, h)")
            self.ratio_range: tuple[float, float] | None = (float(ratio_range[0]), float(ratio_range[1]))
        else:
            if not (
                isinstance(scale, Sequence)
                and len(scale) == 2
                and all(isinstance(s, Sequence) for s in scale)
            ):
                raise ValueError(
                    "RandomResize: without ratio_range, scale must be two (w, h) pairs to draw between, "
                    f"got {scale!r}"
                )
            self.scale = [_pair(s, "RandomResize", "scale (w, h)") for s in scale]
            self.ratio_range = None
        self.keep_ratio = keep_ratio
        self.interpolation = interpolation

    def sample_scale(self, rng: np.random.Generator) -> tuple[int, int]:
        """A random target scale (w, h)."""
        if self.ratio_range is not None:
            lo, hi = self.ratio_range
            ratio = rng.random() * (hi - lo) + lo
            return scale_size(self.scale, ratio)
        (w0, h0), (w1, h1) = self.scale
        edge_w = int(rng.integers(min(w0, w1), max(w0, w1) + 1))
        edge_h = int(rng.integers(min(h0, h1), max(h0, h1) + 1))
        return edge_w, edge_h

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        rng = _require_rng(rng, "RandomResize")
        return _apply_resize(results, self.sample_scale(rng), self.keep_ratio, self.interpolation)

    def __repr__(self) -> str:
        return (
            f"RandomResize(scale={self.scale}, ratio_range={self.ratio_range}, keep_ratio={self.keep_ratio}, "
            f"interpolation={self.interpolation!r})"
        )


class RandomChoiceResize:
    """Resize to one of `scales` (each (w, h)), picked uniformly at random, as mmcv's RandomChoiceResize.

    The chosen scale is applied like `Resize(scale, keep_ratio)`; records `scale_idx` besides
    Resize's `img_shape`, `scale`, `scale_factor` and `keep_ratio`. Only `resize_type="Resize"`
    exists here.
    """

    def __init__(
        self,
        scales: Sequence[int] | Sequence[Sequence[int]],
        resize_type: str = "Resize",
        keep_ratio: bool = True,
        interpolation: str = "bilinear",
    ) -> None:
        if resize_type != "Resize":
            raise ValueError(
                f"RandomChoiceResize: only resize_type='Resize' is supported, got {resize_type!r}"
            )
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"RandomChoiceResize: interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}"
            )
        if isinstance(scales, Sequence) and scales and all(isinstance(s, (int, np.integer)) for s in scales):
            scales = [scales]  # a single (w, h) pair
        if not isinstance(scales, Sequence) or not scales:
            raise ValueError(f"RandomChoiceResize: scales must be a non-empty list of (w, h), got {scales!r}")
        self.scales = [_pair(s, "RandomChoiceResize", "each scale (w, h)") for s in scales]
        self.resize_type = resize_type
        self.keep_ratio = keep_ratio
        self.interpolation = interpolation

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        rng = _require_rng(rng, "RandomChoiceResize")
        index = int(rng.integers(len(self.scales)))
        results = _apply_resize(results, self.scales[index], self.keep_ratio, self.interpolation)
        results["scale_idx"] = index
        return results

    def __repr__(self) -> str:
        return (
            f"RandomChoiceResize(scales={self.scales}, keep_ratio={self.keep_ratio}, "
            f"interpolation={self.interpolation!r})"
        )


class ResizeShortestEdge:
    """Scale the short edge to `scale` (the smaller value of a pair) keeping the aspect ratio, as mmseg's.

    If the long edge would then exceed `max_size`, the image is scaled down so that it does not.
    Edges are rounded half up. Records what `Resize` records (`scale` is the final (w, h)).
    """

    def __init__(
        self, scale: int | Sequence[int], max_size: int | None = None, interpolation: str = "bilinear"
    ) -> None:
        if isinstance(scale, (int, np.integer)):
            short = int(scale)
        else:
            short = min(_pair(scale, "ResizeShortestEdge", "scale"))
        if short <= 0:
            raise ValueError(f"ResizeShortestEdge: scale must be positive, got {scale!r}")
        if max_size is not None and max_size <= 0:
            raise ValueError(f"ResizeShortestEdge: max_size must be positive or None, got {max_size!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"ResizeShortestEdge: interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}"
            )
        self.scale = scale
        self.short_edge = short
        self.max_size = max_size
        self.interpolation = interpolation

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """The `(w, h)` an `h x w` image is resized to."""
        size = float(self.short_edge)
        factor = size / min(h, w)
        new_h, new_w = (size, factor * w) if h < w else (factor * h, size)
        if self.max_size and max(new_h, new_w) > self.max_size:
            factor = self.max_size / max(new_h, new_w)
            new_h, new_w = new_h * factor, new_w * factor
        return max(1, int(new_w + 0.5)), max(1, int(new_h + 0.5))

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        h, w = results["img"].shape[:2]
        return _apply_resize(results, self.output_size(h, w), False, self.interpolation)

    def __repr__(self) -> str:
        return (
            f"ResizeShortestEdge(scale={self.scale}, max_size={self.max_size}, "
            f"interpolation={self.interpolation!r})"
        )


# --- cropping and flipping --------------------------------------------------------------------------


class RandomCrop:
    """Crop a random `crop_size` (h, w) window (the whole side where the image is smaller).

    With `cat_max_ratio` < 1, up to 10 windows are tried until no single class (ignore_index
    excluded) covers `cat_max_ratio` or more of the crop and more than one class is present, as
    MMSegmentation does; if none qualifies, the next random window is taken.
    """

    def __init__(
        self, crop_size: int | Sequence[int], cat_max_ratio: float = 1.0, ignore_index: int = 255
    ) -> None:
        self.crop_size = _pair(crop_size, "RandomCrop", "crop_size (h, w)")
        if not 0 < cat_max_ratio <= 1:
            raise ValueError(f"RandomCrop: cat_max_ratio must be in (0, 1], got {cat_max_ratio!r}")
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = ignore_index

    def _random_bbox(self, img_hw: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
        margin_h = max(img_hw[0] - self.crop_size[0], 0)
        margin_w = max(img_hw[1] - self.crop_size[1], 0)
        y0 = int(rng.integers(0, margin_h + 1))
        x0 = int(rng.integers(0, margin_w + 1))
        return y0, y0 + self.crop_size[0], x0, x0 + self.crop_size[1]

    def crop_bbox(self, results: Results, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """The window (y0, y1, x0, x1) to crop."""
        img_hw = results["img"].shape[:2]
        bbox = self._random_bbox(img_hw, rng)
        seg = results.get("gt_seg_map")
        if self.cat_max_ratio < 1.0 and seg is not None:
            for _ in range(10):
                counts = _label_counts(_crop(seg, bbox), self.ignore_index)
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                bbox = self._random_bbox(img_hw, rng)
        return bbox

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        rng = _require_rng(rng, "RandomCrop")
        bbox = self.crop_bbox(results, rng)
        results["img"] = _crop(results["img"], bbox)
        if results.get("gt_seg_map") is not None:
            results["gt_seg_map"] = _crop(results["gt_seg_map"], bbox)
        results["img_shape"] = tuple(int(s) for s in results["img"].shape[:2])
        return results

    def __repr__(self) -> str:
        return f"RandomCrop(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio})"


def _label_counts(seg: np.ndarray, ignore_index: int) -> np.ndarray:
    """Pixel count of each label present in `seg`, `ignore_index` left out (bincount: no sorting)."""
    if seg.dtype == np.uint8 or (np.issubdtype(seg.dtype, np.integer) and seg.size and seg.min() >= 0):
        counts = np.bincount(seg.ravel(), minlength=ignore_index + 1 if 0 <= ignore_index < 65536 else 0)
        if 0 <= ignore_index < len(counts):
            counts[ignore_index] = 0
        return counts[counts > 0]
    labels, counts = np.unique(seg, return_counts=True)
    return counts[labels != ignore_index]


def _crop(arr: np.ndarray, bbox: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = bbox
    return arr[y0:y1, x0:x1, ...]


FLIP_DIRECTIONS = ("horizontal", "vertical", "diagonal")


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


class RandomFlip:
    """Flip with probability `prob` in `direction` (or a list of directions, each with prob / n).

    `prob` may also be a list with one probability per direction. Records `flip` and
    `flip_direction` (None when not flipped).
    """

    def __init__(
        self, prob: float | Sequence[float] = 0.5, direction: str | Sequence[str] = "horizontal"
    ) -> None:
        directions = [direction] if isinstance(direction, str) else list(direction)
        for d in directions:
            if d not in FLIP_DIRECTIONS:
                raise ValueError(f"RandomFlip: direction must be one of {FLIP_DIRECTIONS}, got {d!r}")
        if isinstance(prob, (int, float)):
            if not 0 <= prob <= 1:
                raise ValueError(f"RandomFlip: prob must be in [0, 1], got {prob!r}")
            probs = [prob / len(directions)] * len(directions)
        else:
            probs = [float(p) for p in prob]
            if len(probs) != len(directions) or min(probs) < 0 or sum(probs) > 1 + 1e-9:
                raise ValueError(
                    f"RandomFlip: a list prob needs one value per direction summing to <= 1, got {prob!r} "
                    f"for directions {directions}"
                )
        self.prob = prob
        self.direction = direction
        self._choices: list[str | None] = [*directions, None]
        self._probs = np.array([*probs, max(0.0, 1.0 - sum(probs))])
        self._probs /= self._probs.sum()

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        rng = _require_rng(rng, "RandomFlip")
        direction = self._choices[int(rng.choice(len(self._choices), p=self._probs))]
        if direction is not None:
            results["img"] = flip_array(results["img"], direction)
            if results.get("gt_seg_map") is not None:
                results["gt_seg_map"] = flip_array(results["gt_seg_map"], direction)
        results["flip"] = direction is not None
        results["flip_direction"] = direction
        return results

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob}, direction={self.direction!r})"


# --- rotating, padding, cutting out -----------------------------------------------------------------


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


class RandomRotate:
    """Rotate image and mask with probability `prob` by an angle drawn uniformly from `degree`.

    As MMSegmentation's: `degree` is (min, max) or a positive number d meaning (-d, d); positive
    angles rotate clockwise; the image is interpolated bilinearly (uncovered pixels `pad_val`),
    the mask by nearest neighbour (uncovered pixels `seg_pad_val`, 255 = ignored); `center` (x, y)
    and `auto_bound` as mmcv.imrotate. Records `rotate_degree` (None when not rotated) and
    `img_shape`.
    """

    def __init__(
        self,
        prob: float,
        degree: float | Sequence[float],
        pad_val: float | Sequence[float] = 0,
        seg_pad_val: int = 255,
        center: Sequence[float] | None = None,
        auto_bound: bool = False,
    ) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f"RandomRotate: prob must be in [0, 1], got {prob!r}")
        if isinstance(degree, (int, float)):
            if degree <= 0:
                raise ValueError(f"RandomRotate: a single degree must be positive, got {degree!r}")
            degree = (-float(degree), float(degree))
        if len(degree) != 2:
            raise ValueError(f"RandomRotate: degree must be a number or (min, max), got {degree!r}")
        if center is not None and auto_bound:
            raise ValueError(
                "RandomRotate: `auto_bound` rotates about the image centre; do not give `center`"
            )
        self.prob = float(prob)
        self.degree = (float(min(degree)), float(max(degree)))
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val
        self.center = tuple(float(c) for c in center) if center is not None else None
        self.auto_bound = auto_bound

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        rng = _require_rng(rng, "RandomRotate")
        rotate = rng.random() < self.prob
        degree = float(rng.uniform(*self.degree))
        results["rotate_degree"] = None
        if rotate:
            img, mask = rotate_arrays(
                results["img"],
                results.get("gt_seg_map"),
                degree,
                self.pad_val,
                self.seg_pad_val,
                self.center,
                self.auto_bound,
            )
            results["img"] = img
            if mask is not None:
                results["gt_seg_map"] = mask
            results["img_shape"] = tuple(int(s) for s in img.shape[:2])
            results["rotate_degree"] = degree
        return results

    def __repr__(self) -> str:
        return (
            f"RandomRotate(prob={self.prob}, degree={self.degree}, pad_val={self.pad_val}, "
            f"seg_pad_val={self.seg_pad_val}, center={self.center}, auto_bound={self.auto_bound})"
        )


PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


class Pad:
    """Pad the image (and mask) on the right and bottom, as mmcv's Pad.

    To `size` (h, w) — note: (h, w) like every shape here, where mmcv's `size` is (w, h) — or to
    the next multiple of `size_divisor`, optionally after making it square (`pad_to_square`).
    The image is padded with `pad_val["img"]` (or `padding_mode` edge/reflect/symmetric), the
    mask always with the constant `pad_val["seg"]` (255 = ignored). Records `pad_shape`,
    `pad_fixed_size`, `pad_size_divisor` and `img_shape` (the padded size, as mmcv).
    """

    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        size_divisor: int | None = None,
        pad_to_square: bool = False,
        pad_val: float | dict | None = None,
        padding_mode: str = "constant",
    ) -> None:
        if pad_to_square:
            if size is not None:
                raise ValueError("Pad: give `size` or `pad_to_square`, not both")
        elif (size is None) == (size_divisor is None):
            raise ValueError(f"Pad: give exactly one of size or size_divisor, got {size=}, {size_divisor=}")
        if size_divisor is not None and (int(size_divisor) != size_divisor or size_divisor <= 0):
            raise ValueError(f"Pad: size_divisor must be a positive int, got {size_divisor!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"Pad: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if pad_val is None:
            pad_val = {"img": 0, "seg": 255}
        elif not isinstance(pad_val, dict):
            pad_val = {"img": pad_val, "seg": 255}
        self.size = _pair(size, "Pad", "size (h, w)") if size is not None else None
        self.size_divisor = int(size_divisor) if size_divisor is not None else None
        self.pad_to_square = pad_to_square
        self.pad_val = {"img": pad_val.get("img", 0), "seg": int(pad_val.get("seg", 255))}
        self.padding_mode = padding_mode

    def target_size(self, h: int, w: int) -> tuple[int, int]:
        """The padded `(h, w)` of an `h x w` image."""
        size = (max(h, w), max(h, w)) if self.pad_to_square else None
        if self.size_divisor is not None:
            size = size or (h, w)
            d = self.size_divisor
            return -(-size[0] // d) * d, -(-size[1] // d) * d
        return size or self.size

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        img = results["img"]
        h, w = img.shape[:2]
        th, tw = self.target_size(h, w)
        if th < h or tw < w:
            raise ValueError(
                f"Pad: sample {results.get('img_id')!r} of size (h, w) = {(h, w)} is larger than the "
                f"pad size {(th, tw)}; crop or resize it first"
            )
        widths = ((0, th - h), (0, tw - w)) + ((0, 0),) * (img.ndim - 2)
        if self.padding_mode == "constant":
            channels = img.shape[2] if img.ndim == 3 else 1
            value = np.broadcast_to(np.asarray(self.pad_val["img"]), (channels,)).astype(img.dtype)
            padded = np.empty((th, tw, *img.shape[2:]), dtype=img.dtype)
            padded[...] = value.reshape((1, 1, *img.shape[2:])) if img.ndim == 3 else value[0]
            padded[:h, :w] = img
        else:
            padded = np.pad(img, widths, mode=self.padding_mode)
        results["img"] = padded
        seg = results.get("gt_seg_map")  # a mask still pending (before LoadAnnotations) is left alone
        if seg is not None:
            padded_seg = np.full((th, tw), self.pad_val["seg"], dtype=seg.dtype)
            padded_seg[:h, :w] = seg
            results["gt_seg_map"] = padded_seg
        results["pad_shape"] = (th, tw)
        results["pad_fixed_size"] = self.size
        results["pad_size_divisor"] = self.size_divisor
        results["img_shape"] = (th, tw)
        return results

    def __repr__(self) -> str:
        return (
            f"Pad(size={self.size}, size_divisor={self.size_divisor}, pad_to_square={self.pad_to_square}, "
            f"pad_val={self.pad_val}, padding_mode={self.padding_mode!r})"
        )


class RandomCutOut:
    """Cutout: with probability `prob`, fill `n_holes` random rectangles with `fill_in`, as mmseg's.

    `n_holes` is an int or (min, max) (drawn inclusive). Each hole's top-left corner is uniform
    over the image and its size is one of `cutout_shape` ((h, w) pixels; mmseg's is (w, h)) or
    `cutout_ratio` ((h, w) fractions of the image), chosen at random; holes are clipped at the
    border. With `seg_fill_in` (e.g. 255 = ignored) the mask gets it in the holes too. Records
    `cutout_boxes` as (y0, y1, x0, x1).
    """

    def __init__(
        self,
        prob: float,
        n_holes: int | Sequence[int],
        cutout_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
        cutout_ratio: Sequence[float] | Sequence[Sequence[float]] | None = None,
        fill_in: Sequence[float] = (0, 0, 0),
        seg_fill_in: int | None = None,
    ) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f"RandomCutOut: prob must be in [0, 1], got {prob!r}")
        if (cutout_shape is None) == (cutout_ratio is None):
            raise ValueError("RandomCutOut: give exactly one of cutout_shape or cutout_ratio")
        if isinstance(n_holes, (int, np.integer)):
            n_holes = (int(n_holes), int(n_holes))
        if len(n_holes) != 2 or not 0 <= n_holes[0] <= n_holes[1]:
            raise ValueError(f"RandomCutOut: n_holes must be an int or (min, max), got {n_holes!r}")
        if seg_fill_in is not None and not (isinstance(seg_fill_in, int) and 0 <= seg_fill_in <= 255):
            raise ValueError(
                f"RandomCutOut: seg_fill_in must be an int in [0, 255] or None, got {seg_fill_in!r}"
            )
        candidates = cutout_ratio if cutout_ratio is not None else cutout_shape
        if isinstance(candidates, Sequence) and candidates and not isinstance(candidates[0], Sequence):
            candidates = [candidates]
        if not candidates or any(len(c) != 2 or min(c) < 0 for c in candidates):
            raise ValueError(
                "RandomCutOut: cutout_shape / cutout_ratio must be (h, w) or a list of (h, w), "
                f"got {candidates!r}"
            )
        self.prob = float(prob)
        self.n_holes = (int(n_holes[0]), int(n_holes[1]))
        self.with_ratio = cutout_ratio is not None
        self.candidates = [tuple(c) for c in candidates]
        self.fill_in = fill_in
        self.seg_fill_in = seg_fill_in

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        rng = _require_rng(rng, "RandomCutOut")
        boxes = []
        if rng.random() < self.prob:
            img = results["img"].copy()
            h, w = img.shape[:2]
            seg = results.get("gt_seg_map")
            if seg is not None and self.seg_fill_in is not None:
                seg = seg.copy()
            for _ in range(int(rng.integers(self.n_holes[0], self.n_holes[1] + 1))):
                x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
                ch, cw = self.candidates[int(rng.integers(len(self.candidates)))]
                if self.with_ratio:
                    ch, cw = int(ch * h), int(cw * w)
                y1, x1 = min(y0 + int(ch), h), min(x0 + int(cw), w)
                img[y0:y1, x0:x1] = self.fill_in
                if seg is not None and self.seg_fill_in is not None:
                    seg[y0:y1, x0:x1] = self.seg_fill_in
                boxes.append((y0, y1, x0, x1))
            results["img"] = img
            if seg is not None:
                results["gt_seg_map"] = seg
        results["cutout_boxes"] = boxes
        return results

    def __repr__(self) -> str:
        kind = "cutout_ratio" if self.with_ratio else "cutout_shape"
        return (
            f"RandomCutOut(prob={self.prob}, n_holes={self.n_holes}, {kind}={self.candidates}, "
            f"fill_in={self.fill_in}, seg_fill_in={self.seg_fill_in})"
        )


# --- colour ------------------------------------------------------------------------------------------


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


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """`img * alpha + beta`, clipped to [0, 255] and truncated to uint8 (as mmseg), through a lookup table."""
    table = np.clip(np.arange(256, dtype=np.float32) * np.float32(alpha) + np.float32(beta), 0, 255)
    return table.astype(np.uint8)[img]


class PhotoMetricDistortion:
    """MMSegmentation's photometric distortion; each step applied with probability 1/2.

    1. brightness (add a value in ±brightness_delta), 2. contrast (multiply by a value in
    contrast_range) either here or after step 4, 3. saturation (scale S in HSV by a value in
    saturation_range), 4. hue (shift by an int in [-hue_delta, hue_delta), in OpenCV's half-degree
    units). The image only; the mask is untouched.
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta = hue_delta

    def brightness(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            return _convert(img, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        return img

    def contrast(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            return _convert(img, alpha=rng.uniform(self.contrast_lower, self.contrast_upper))
        return img

    def saturation(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            return scale_saturation(img, rng.uniform(self.saturation_lower, self.saturation_upper))
        return img

    def hue(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            hsv = rgb_to_hsv(img)
            hsv[..., 0] = (hsv[..., 0] + 2.0 * int(rng.integers(-self.hue_delta, self.hue_delta))) % 360.0
            return hsv_to_rgb(hsv)
        return img

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        rng = _require_rng(rng, "PhotoMetricDistortion")
        img = self.brightness(results["img"], rng)
        contrast_first = bool(rng.integers(2))
        if contrast_first:
            img = self.contrast(img, rng)
        img = self.saturation(img, rng)
        img = self.hue(img, rng)
        if not contrast_first:
            img = self.contrast(img, rng)
        results["img"] = img
        return results

    def __repr__(self) -> str:
        return (
            f"PhotoMetricDistortion(brightness_delta={self.brightness_delta}, "
            f"contrast_range={(self.contrast_lower, self.contrast_upper)}, "
            f"saturation_range={(self.saturation_lower, self.saturation_upper)}, hue_delta={self.hue_delta})"
        )


class RGB2Gray:
    """Grey image: the weighted sum of the channels, repeated `out_channels` times (default: as many as in).

    Our images are RGB, so the default weights (0.299, 0.587, 0.114) give the usual luma (mmseg
    applies the same weights to its BGR images). The result is rounded to uint8. Records `img_shape`.
    """

    def __init__(
        self, out_channels: int | None = None, weights: Sequence[float] = (0.299, 0.587, 0.114)
    ) -> None:
        if out_channels is not None and out_channels <= 0:
            raise ValueError(f"RGB2Gray: out_channels must be positive or None, got {out_channels!r}")
        self.out_channels = out_channels
        self.weights = tuple(float(v) for v in weights)

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        img = results["img"]
        if img.ndim != 3 or img.shape[2] != len(self.weights):
            raise ValueError(
                f"RGB2Gray: sample {results.get('img_id')!r}: expected an (H, W, {len(self.weights)}) image, "
                f"got shape {img.shape}"
            )
        grey = img.astype(np.float32) @ np.asarray(self.weights, dtype=np.float32)
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        channels = self.out_channels or img.shape[2]
        results["img"] = np.ascontiguousarray(np.repeat(grey[..., None], channels, axis=2))
        results["img_shape"] = tuple(int(s) for s in img.shape[:2])
        return results

    def __repr__(self) -> str:
        return f"RGB2Gray(out_channels={self.out_channels}, weights={self.weights})"


# --- loading --------------------------------------------------------------------------------------------

PENDING_GT_KEY = "pending_gt_seg_map"


class LoadAnnotations:
    """Where the label map enters the pipeline, as in MMSegmentation's test pipelines.

    SegDataset reads the mask before the pipeline. Without this transform the mask is
    `gt_seg_map` from the start, and every geometric transform applies to it (training). With
    it, the mask waits under `pending_gt_seg_map` and becomes `gt_seg_map` here, so transforms
    placed before it touch the image only: `[Resize, LoadAnnotations, PackSegInputs]` keeps
    validation labels at their original size, where metrics are computed.
    `reduce_zero_label` is a dataset option here (it is applied when the row is read); giving it
    to LoadAnnotations, as MMSegmentation configs do, is an error that says so.
    """

    def __init__(self, reduce_zero_label: bool | None = None) -> None:
        if reduce_zero_label is not None:
            raise ValueError(
                "LoadAnnotations(reduce_zero_label=...): in segaccel reduce_zero_label is an option of the "
                "dataset (dataset.reduce_zero_label: true), applied when a row is read; remove it here"
            )

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        if PENDING_GT_KEY in results:
            results["gt_seg_map"] = results.pop(PENDING_GT_KEY)
        return results

    def __repr__(self) -> str:
        return "LoadAnnotations()"


# --- composition -------------------------------------------------------------------------------------


class Compose:
    """Apply transforms in order; config dicts are built through TRANSFORMS.

    All transforms share the one per-sample `rng`. A transform returning None stops the pipeline
    and Compose returns None (as mmcv).
    """

    def __init__(self, transforms: Sequence[dict | Callable] | None, key: str = "pipeline") -> None:
        self.transforms: list[Callable] = []
        for i, t in enumerate(transforms or []):
            if isinstance(t, dict):
                t = TRANSFORMS.build(t, key=f"{key}.{i}")
            elif not callable(t):
                raise ConfigError(f"{key}.{i}: expected a transform config dict or a callable, got {t!r}")
            self.transforms.append(t)

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results | None:
        for t in self.transforms:
            results = t(results, rng=rng)
            if results is None:
                return None
        return results

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"
