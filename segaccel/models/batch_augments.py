"""Batch augmentations on the accelerator: the augmentations a pipeline drew but left undone.

A transform with `on_device: true` (`PhotoMetricDistortion`, `RandomFlip`) draws its parameters on
the CPU from the sample's own generator, as always, and records them in the sample's metainfo under
`batch_augments` (a list of dicts with their `type`) instead of applying them. The data preprocessor
applies them here in training, after collation, on the images' device (MMSegmentation's
`batch_augments` step): the same draws give the same augmentation, and the CPU workers skip the work.

- `RandomFlip` `{"direction"}`: image and `gt_sem_seg` flipped (`torch.flip`): exactly the CPU result.
- `PhotoMetricDistortion` `{"brightness", "contrast", "contrast_first", "saturation", "hue"}`: the same
  arithmetic as the CPU transform (MMSegmentation's): brightness/contrast as 256-entry tables built in
  float32 exactly like the CPU ones; OpenCV's uint8 RGB→HSV in its integer arithmetic (exact); HSV→RGB
  in OpenCV's float32 formula, truncated as its vectorised loop does and rounded in the last
  `width % block` pixels of each row, which its scalar loop finishes (the block is read from the
  installed OpenCV once: 32 pixels with AVX2). Measured against the CPU transform on x86: the same
  pixels at every width; see tests/models.

Flips and photometric steps commute (a flip moves pixels, the photometric steps change each pixel by
its own value), so the flips of a sample are applied first, then the photometric distortions of all
samples of the same size together, as one batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from segaccel.structures import PixelData, SegDataSample

BATCH_AUGMENTS_KEY = "batch_augments"  # the key `segaccel.data.transforms` records the draws under
FLIP_DIMS = {"horizontal": (-1,), "vertical": (-2,), "diagonal": (-2, -1)}

_HSV_SHIFT = 12
_tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def has_batch_augments(samples: Sequence[SegDataSample] | None) -> bool:
    """Whether any sample carries augmentations left for the device."""
    return bool(samples) and any(s.metainfo.get(BATCH_AUGMENTS_KEY) for s in samples)


def linear_table(alpha: float = 1.0, beta: float = 0.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """(256,) uint8: `v * alpha + beta` in float32, clipped to [0, 255], truncated (MMSeg's `convert`)."""
    values = torch.arange(256, dtype=torch.float32) * torch.tensor(alpha, dtype=torch.float32)
    values = values + torch.tensor(beta, dtype=torch.float32)
    return values.clamp(0, 255).to(torch.uint8).to(device)


def _hsv_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's RGB2HSV_b division tables (sdiv, hdiv for a 180 hue range), int32 on `device`."""
    if device not in _tables:
        i = torch.arange(1, 256, dtype=torch.float64)
        sdiv = torch.cat([torch.zeros(1, dtype=torch.float64), torch.round((255 << _HSV_SHIFT) / i)])
        hdiv = torch.cat([torch.zeros(1, dtype=torch.float64), torch.round((180 << _HSV_SHIFT) / (6.0 * i))])
        _tables[device] = (sdiv.to(torch.int32).to(device), hdiv.to(torch.int32).to(device))
    return _tables[device]


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 RGB → uint8 HSV exactly as OpenCV's `COLOR_RGB2HSV` (H in [0, 180))."""
    sdiv, hdiv = _hsv_tables(rgb.device)
    r, g, b = rgb.to(torch.int32).unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    round_half = 1 << (_HSV_SHIFT - 1)
    s = (diff * sdiv[v] + round_half) >> _HSV_SHIFT
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * hdiv[diff] + round_half) >> _HSV_SHIFT
    h = torch.where(h < 0, h + 180, h)
    return torch.stack([h, s, v], 1).to(torch.uint8)


def _fused_one_minus(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`1 - a * b` rounded once to float32, as the fused multiply-add OpenCV's compiled loop uses."""
    return (1.0 - a.double() * b.double()).float()


@functools.cache
def _opencv_block() -> int | None:
    """Pixels per step of OpenCV's vectorised uint8 `COLOR_HSV2RGB` loop (None: no vector loop).

    Read from the installed OpenCV once. The probe pixel's G is 255 * v * (1 - s * (1 - f)) = 42.9:
    the vector loop truncates it to 42, the scalar loop rounds it to 43. In a row of 1023 such
    pixels the vector loop covers the first 1023 - 1023 % block = 1024 - block (a power-of-two block).
    """
    row = np.full((1, 1023, 3), (10, 200, 90), np.uint8)  # H 10, S 200, V 90
    scalar = cv2.cvtColor(row[:, :1], cv2.COLOR_HSV2RGB)[0, 0, 1]  # one pixel: the scalar loop alone
    vector_pixels = int(np.count_nonzero(cv2.cvtColor(row, cv2.COLOR_HSV2RGB)[0, :, 1] != scalar))
    return 1024 - vector_pixels if vector_pixels else None


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 HSV → uint8 RGB in the float32 arithmetic of OpenCV's `COLOR_HSV2RGB`.

    Its vectorised loop computes `v * (1 - s * h)` with a fused multiply-add (one rounding) and
    truncates the result times 255; its scalar loop, which finishes the last `W % block` pixels of
    each row, rounds it (half to even) instead. Both are reproduced here.
    """
    one = torch.tensor(1.0, dtype=torch.float32, device=hsv.device)
    h, s, v = hsv.to(torch.float32).unbind(1)
    s = s * torch.tensor(1.0 / 255.0, dtype=torch.float32)
    v = v * torch.tensor(1.0 / 255.0, dtype=torch.float32)
    h = h * torch.tensor(6.0 / 180.0, dtype=torch.float32)
    pre = torch.trunc(h)
    f = h - pre
    tab0, tab1 = v, v * (one - s)
    tab2, tab3 = v * _fused_one_minus(s, f), v * _fused_one_minus(s, one - f)
    sector = pre - torch.trunc(pre * torch.tensor(1.0 / 6.0, dtype=torch.float32)) * 6
    b = torch.where(sector < 2, tab1, torch.where(sector == 2, tab3, torch.where(sector > 4, tab2, tab0)))
    g = torch.where(sector < 1, tab3, torch.where(sector < 3, tab0, torch.where(sector == 3, tab2, tab1)))
    r = torch.where(
        sector < 1,
        tab0,
        torch.where(sector == 1, tab2, torch.where(sector < 4, tab1, torch.where(sector == 4, tab3, tab0))),
    )
    rgb = torch.stack([r, g, b], 1) * torch.tensor(255.0, dtype=torch.float32)
    width, block = rgb.shape[-1], _opencv_block()
    tail = width if block is None else width % block
    out = torch.trunc(rgb)
    if tail:  # the scalar loop's pixels, rounded
        out[..., width - tail :] = torch.round(rgb[..., width - tail :])
    return out.clamp(0, 255).to(torch.uint8)


def _lookup(images: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """`tables[n][images[n]]` for each sample n: images (N, C, H, W) uint8, tables (N, 256) or (N, C, 256)."""
    n, c = images.shape[:2]
    if tables.dim() == 2:
        tables = tables[:, None].expand(n, c, 256)
    flat = images.reshape(n * c, -1).long()
    return torch.gather(tables.reshape(n * c, 256), 1, flat).reshape(images.shape)


def photometric_distortion(images: torch.Tensor, params: Sequence[dict[str, Any]]) -> torch.Tensor:
    """`PhotoMetricDistortion.apply` for a batch (N, 3, H, W) uint8 RGB, sample n with `params[n]`."""
    device = images.device
    identity = torch.arange(256, dtype=torch.uint8, device=device)

    def tables(make: Any) -> torch.Tensor:
        made = [make(p) for p in params]
        return torch.stack([identity if table is None else table for table in made])

    def first(p: dict[str, Any]) -> torch.Tensor | None:  # brightness, then contrast when it comes first
        table = linear_table(beta=p["brightness"], device=device) if p["brightness"] is not None else None
        if p["contrast_first"] and p["contrast"] is not None:
            contrast = linear_table(alpha=p["contrast"], device=device)
            table = contrast if table is None else contrast[table.long()]
        return table

    images = _lookup(images, tables(first))
    for step in ("saturation", "hue"):
        chosen = [n for n, p in enumerate(params) if p[step] is not None]
        if not chosen:
            continue
        index = torch.tensor(chosen, device=device)
        hsv = rgb_to_hsv(images.index_select(0, index))
        channel = 1 if step == "saturation" else 0
        if step == "saturation":
            table = torch.stack([linear_table(alpha=params[n][step], device=device) for n in chosen])
        else:
            shifts = torch.tensor([params[n][step] for n in chosen], device=device)
            table = ((torch.arange(256, device=device)[None] + shifts[:, None]) % 180).to(torch.uint8)
        hsv[:, channel] = _lookup(hsv[:, channel : channel + 1], table)[:, 0]
        images = images.index_copy(0, index, hsv_to_rgb(hsv))

    def last(p: dict[str, Any]) -> torch.Tensor | None:
        late = not p["contrast_first"] and p["contrast"] is not None
        return linear_table(alpha=p["contrast"], device=device) if late else None

    return _lookup(images, tables(last))


def apply_batch_augments(
    inputs: Sequence[torch.Tensor], samples: Sequence[SegDataSample], device: torch.device
) -> tuple[list[torch.Tensor], list[SegDataSample]]:
    """Each sample's recorded `batch_augments` applied on `device`: uint8 (C, H, W) images, samples.

    Returns the images on `device` (still uint8) and samples whose `gt_sem_seg` is flipped where the
    image was (copies: the input samples are not modified).
    """
    images = [img.to(device, non_blocking=True) for img in inputs]
    out_samples = list(samples)
    # (k-th distortion of its sample, image shape) -> [(sample, params)]: one batch each, k in order
    photometric: dict[tuple[int, tuple[int, ...]], list[tuple[int, dict[str, Any]]]] = {}
    for i, sample in enumerate(samples):
        steps = sample.metainfo.get(BATCH_AUGMENTS_KEY) or []
        flips = [step for step in steps if step["type"] == "RandomFlip"]
        distortions = [step for step in steps if step["type"] == "PhotoMetricDistortion"]
        if len(flips) + len(distortions) != len(steps):
            unknown = sorted({step["type"] for step in steps} - {"RandomFlip", "PhotoMetricDistortion"})
            raise ValueError(f"data_samples[{i}]: unknown batch augmentation(s) {unknown}")
        for k, step in enumerate(distortions):
            photometric.setdefault((k, tuple(images[i].shape)), []).append((i, step))
        if flips:
            sample = sample.to(device, non_blocking=True)
            for step in flips:
                dims = FLIP_DIMS[step["direction"]]
                images[i] = images[i].flip(dims)
                if "gt_sem_seg" in sample:
                    gt = sample.gt_sem_seg
                    sample.gt_sem_seg = PixelData(gt.data.flip(dims), **gt.metainfo)
            out_samples[i] = sample
    for _, group in sorted(photometric.items(), key=lambda item: item[0][0]):
        index = [i for i, _ in group]
        distorted = photometric_distortion(torch.stack([images[i] for i in index]), [p for _, p in group])
        for i, img in zip(index, distorted):
            images[i] = img
    return images, out_samples
