"""Transforms of pixel values (MMSegmentation 1.x semantics): photometric distortion, grey, cutout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segaccel.data.transforms.checks import require_rng
from segaccel.data.transforms.functional import adjust_hsv, apply_lut, hue_lut, linear_lut, saturation_lut
from segaccel.data.transforms.loading import BATCH_AUGMENTS_KEY, Results


class PhotoMetricDistortion:
    """MMSegmentation's photometric distortion; each step applied with probability 1/2.

    1. brightness (add a value in ±brightness_delta), 2. contrast (multiply by a value in
    contrast_range) either here or after step 4, 3. saturation (scale S of OpenCV's uint8 HSV by a
    value in saturation_range), 4. hue (shift H by an int in [-hue_delta, hue_delta), in OpenCV's
    half-degree units, mod 180). The image only; the mask is untouched.

    The same arithmetic as MMSegmentation's (float32 multiply-add, clip, truncate; `cv2.cvtColor`
    between RGB and uint8 HSV, once for each HSV step), as look-up tables: the same pixels. The
    draws come from the sample's `rng` in MMSegmentation's order (`draw`). With `on_device`, the
    draws are recorded in the sample's `batch_augments` instead and the model's data preprocessor
    applies them after collation, on the accelerator (`segaccel.models.batch_augments`).
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: int = 18,
        on_device: bool = False,
    ) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta = hue_delta
        self.on_device = bool(on_device)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        """This sample's distortion: each step's parameter, or None where the step is skipped."""
        params: dict[str, Any] = {"type": "PhotoMetricDistortion", "brightness": None, "contrast": None}
        if rng.integers(2):
            params["brightness"] = float(rng.uniform(-self.brightness_delta, self.brightness_delta))
        params["contrast_first"] = bool(rng.integers(2))
        if params["contrast_first"] and rng.integers(2):
            params["contrast"] = float(rng.uniform(self.contrast_lower, self.contrast_upper))
        params["saturation"] = (
            float(rng.uniform(self.saturation_lower, self.saturation_upper)) if rng.integers(2) else None
        )
        params["hue"] = int(rng.integers(-self.hue_delta, self.hue_delta)) if rng.integers(2) else None
        if not params["contrast_first"] and rng.integers(2):
            params["contrast"] = float(rng.uniform(self.contrast_lower, self.contrast_upper))
        return params

    @staticmethod
    def apply(img: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        """`img` (H, W, 3) RGB uint8 distorted as `params` (from `draw`) say."""
        table = None  # brightness, then contrast when it comes first: one table for both
        if params["brightness"] is not None:
            table = linear_lut(beta=params["brightness"])
        if params["contrast_first"] and params["contrast"] is not None:
            contrast = linear_lut(alpha=params["contrast"])
            table = contrast if table is None else contrast[table]
        if table is not None:
            img = apply_lut(img, table)
        if params["saturation"] is not None:
            img = adjust_hsv(img, saturation_lut(params["saturation"]))
        if params["hue"] is not None:
            img = adjust_hsv(img, hue_lut(params["hue"]))
        if not params["contrast_first"] and params["contrast"] is not None:
            img = apply_lut(img, linear_lut(alpha=params["contrast"]))
        return img

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        params = self.draw(require_rng(rng, "PhotoMetricDistortion"))
        if self.on_device:
            results.setdefault(BATCH_AUGMENTS_KEY, []).append(params)
        else:
            results["img"] = self.apply(results["img"], params)
        return results

    def __repr__(self) -> str:
        return (
            f"PhotoMetricDistortion(brightness_delta={self.brightness_delta}, "
            f"contrast_range={(self.contrast_lower, self.contrast_upper)}, "
            f"saturation_range={(self.saturation_lower, self.saturation_upper)}, hue_delta={self.hue_delta}, "
            f"on_device={self.on_device})"
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
        rng = require_rng(rng, "RandomCutOut")
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
