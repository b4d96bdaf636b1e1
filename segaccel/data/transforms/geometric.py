"""Geometric transforms with MMSegmentation 1.x semantics: resize, crop, flip, rotate, pad.

Random transforms draw only from `rng`, a generator the dataset seeds per sample from
(seed, epoch, index), so augmentation does not depend on workers or processes. Every shape is
(h, w), except `scale` in `Resize`/`RandomResize`, which is (w, h) as in MMSegmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segaccel.data.transforms.checks import as_pair, require_rng
from segaccel.data.transforms.functional import (
    FLIP_DIRECTIONS,
    INTERPOLATIONS,
    crop,
    flip_array,
    label_counts,
    rescale_size,
    resize_image,
    resize_mask,
    rotate_arrays,
    scale_size,
)
from segaccel.data.transforms.loading import BATCH_AUGMENTS_KEY, Results
from segaccel.limits import check_image_size

PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


def apply_resize(results: Results, scale: tuple[int, int], keep_ratio: bool, interpolation: str) -> Results:
    """Resize `img` (and `gt_seg_map`) to `scale` (w, h) and record the metainfo, as mmcv's Resize."""
    img = results["img"]
    h, w = img.shape[:2]
    new_w, new_h = rescale_size((w, h), scale) if keep_ratio else scale
    check_image_size(new_h, new_w, f"Resize: the resized image (from {h}x{w})")  # before allocating it
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
        self.scale = as_pair(scale, "Resize", "scale (w, h)") if scale is not None else None
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
        return apply_resize(results, scale, self.keep_ratio, self.interpolation)

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
            self.scale: Any = as_pair(scale, "RandomResize", "scale (w, h)")
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
            self.scale = [as_pair(s, "RandomResize", "scale (w, h)") for s in scale]
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
        rng = require_rng(rng, "RandomResize")
        return apply_resize(results, self.sample_scale(rng), self.keep_ratio, self.interpolation)

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
        self.scales = [as_pair(s, "RandomChoiceResize", "each scale (w, h)") for s in scales]
        self.resize_type = resize_type
        self.keep_ratio = keep_ratio
        self.interpolation = interpolation

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        rng = require_rng(rng, "RandomChoiceResize")
        index = int(rng.integers(len(self.scales)))
        results = apply_resize(results, self.scales[index], self.keep_ratio, self.interpolation)
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
            short = min(as_pair(scale, "ResizeShortestEdge", "scale"))
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
        return apply_resize(results, self.output_size(h, w), False, self.interpolation)

    def __repr__(self) -> str:
        return (
            f"ResizeShortestEdge(scale={self.scale}, max_size={self.max_size}, "
            f"interpolation={self.interpolation!r})"
        )


class RandomCrop:
    """Crop a random `crop_size` (h, w) window (the whole side where the image is smaller).

    With `cat_max_ratio` < 1, up to 10 windows are tried until no single class (ignore_index
    excluded) covers `cat_max_ratio` or more of the crop and more than one class is present, as
    MMSegmentation does; if none qualifies, the next random window is taken.
    """

    def __init__(
        self, crop_size: int | Sequence[int], cat_max_ratio: float = 1.0, ignore_index: int = 255
    ) -> None:
        self.crop_size = as_pair(crop_size, "RandomCrop", "crop_size (h, w)")
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
                counts = label_counts(crop(seg, bbox), self.ignore_index)
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                bbox = self._random_bbox(img_hw, rng)
        return bbox

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        rng = require_rng(rng, "RandomCrop")
        bbox = self.crop_bbox(results, rng)
        results["img"] = crop(results["img"], bbox)
        if results.get("gt_seg_map") is not None:
            results["gt_seg_map"] = crop(results["gt_seg_map"], bbox)
        results["img_shape"] = tuple(int(s) for s in results["img"].shape[:2])
        return results

    def __repr__(self) -> str:
        return f"RandomCrop(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio})"


class RandomFlip:
    """Flip with probability `prob` in `direction` (or a list of directions, each with prob / n).

    `prob` may also be a list with one probability per direction. Records `flip` and
    `flip_direction` (None when not flipped). With `on_device`, the image and mask are flipped by the
    model's data preprocessor after collation (`batch_augments`), the draw staying here.
    """

    def __init__(
        self,
        prob: float | Sequence[float] = 0.5,
        direction: str | Sequence[str] = "horizontal",
        on_device: bool = False,
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
        self.on_device = bool(on_device)

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        rng = require_rng(rng, "RandomFlip")
        direction = self._choices[int(rng.choice(len(self._choices), p=self._probs))]
        if direction is not None and self.on_device:
            results.setdefault(BATCH_AUGMENTS_KEY, []).append({"type": "RandomFlip", "direction": direction})
        elif direction is not None:
            results["img"] = flip_array(results["img"], direction)
            if results.get("gt_seg_map") is not None:
                results["gt_seg_map"] = flip_array(results["gt_seg_map"], direction)
        results["flip"] = direction is not None
        results["flip_direction"] = direction
        return results

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob}, direction={self.direction!r}, on_device={self.on_device})"


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
        rng = require_rng(rng, "RandomRotate")
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
        self.size = as_pair(size, "Pad", "size (h, w)") if size is not None else None
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
