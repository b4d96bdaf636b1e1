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

from segaccel.registry import TRANSFORMS

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
    """`(w, h)` multiplied by `scale` and rounded half up (mmcv's `_scale_size`)."""
    if isinstance(scale, (int, float)):
        scale = (scale, scale)
    w, h = size_wh
    return int(w * float(scale[0]) + 0.5), int(h * float(scale[1]) + 0.5)


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
                labels, counts = np.unique(_crop(seg, bbox), return_counts=True)
                counts = counts[labels != self.ignore_index]
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


# --- colour ------------------------------------------------------------------------------------------


def rgb_to_hsv(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB uint8 → float32 HSV: hue in degrees [0, 360), saturation [0, 1], value [0, 255]."""
    rgb = img.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = rgb.max(axis=-1)
    delta = maxc - rgb.min(axis=-1)
    safe = np.where(delta > 0, delta, 1.0)
    hue = np.where(
        maxc == r, ((g - b) / safe) % 6.0, np.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)
    )
    hue = np.where(delta > 0, hue * 60.0, 0.0)
    sat = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1.0), 0.0)
    return np.stack([hue, sat, maxc], axis=-1).astype(np.float32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_hsv`, rounded to (H, W, 3) uint8 RGB."""
    hue, sat, val = hsv[..., 0] % 360.0, hsv[..., 1], hsv[..., 2]
    chroma = val * sat
    hp = hue / 60.0
    x = chroma * (1 - np.abs(hp % 2 - 1))
    zero = np.zeros_like(chroma)
    sector = np.floor(hp).astype(np.int64) % 6
    r = np.choose(sector, [chroma, x, zero, zero, x, chroma])
    g = np.choose(sector, [x, chroma, chroma, x, zero, zero])
    b = np.choose(sector, [zero, zero, x, chroma, chroma, x])
    rgb = np.stack([r, g, b], axis=-1) + (val - chroma)[..., None]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


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
            hsv = rgb_to_hsv(img)
            alpha = rng.uniform(self.saturation_lower, self.saturation_upper)
            hsv[..., 1] = np.clip(hsv[..., 1] * alpha, 0.0, 1.0)
            return hsv_to_rgb(hsv)
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


# --- loading --------------------------------------------------------------------------------------------

PENDING_GT_KEY = "pending_gt_seg_map"


class LoadAnnotations:
    """Where the label map enters the pipeline, as in MMSegmentation's test pipelines.

    SegDataset reads the mask before the pipeline. Without this transform the mask is
    `gt_seg_map` from the start, and every geometric transform applies to it (training). With
    it, the mask waits under `pending_gt_seg_map` and becomes `gt_seg_map` here, so transforms
    placed before it touch the image only: `[Resize, LoadAnnotations, PackSegInputs]` keeps
    validation labels at their original size, where metrics are computed.
    """

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

    def __init__(self, transforms: Sequence[dict | Callable] | None) -> None:
        self.transforms: list[Callable] = []
        for i, t in enumerate(transforms or []):
            if isinstance(t, dict):
                t = TRANSFORMS.build(t, key=f"pipeline[{i}]")
            elif not callable(t):
                raise TypeError(f"pipeline[{i}]: expected a transform config dict or a callable, got {t!r}")
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
