"""Whole and slide inference, and the smallest input a network takes (`Segmentor.min_input_size`).

Functions of a built segmentor (`model`: anything with `encode_decode`, `test_cfg`, `out_channels` and
`pad_val`, i.e. `Segmentor`); `Segmentor.inference` picks one by `test_cfg["mode"]`. Inputs are
`(N, C, H, W)` after the data preprocessor; logits come back `(N, out_channels, H, W)`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .config_guard import check_slide_windows

logger = logging.getLogger(__name__)

_UNKNOWN = object()  # min_input_size not probed yet
_MAX_PROBE = 512  # the largest square side min_input_size tries


def whole_inference(model: Any, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
    """The whole (padded) batch in one forward.

    A batch smaller than the network takes (`min_input_size`, e.g. a 20x20 image through MiT, whose
    first spatial-reduction conv needs a stage-1 map of at least 8x8) is padded right/bottom with
    the preprocessor's `pad_val` up to that size, as the preprocessor's own `size_divisor` padding
    would, and the logits are cropped back. A batch the network takes as it is runs unchanged.
    """
    return padded_encode_decode(model, inputs, batch_img_metas, min_input_size(model, inputs))


def slide_inference(
    model: Any, inputs: torch.Tensor, batch_img_metas: list[dict], crops_per_batch: int = 4
) -> torch.Tensor:
    """Overlapping `crop_size` windows every `stride`; logits summed and divided by a count map.

    As MMSegmentation: the last window of a row/column is shifted back to end at the border, and
    a window is never larger than the image. The model only ever sees `crop_size` windows, the size
    it was trained on: a window of an image smaller than the crop (in one or both dimensions) is
    padded right/bottom with the preprocessor's `pad_val` up to `crop_size` (and further, should
    the crop be smaller than `min_input_size`), and its logits are cropped back. Memory is bounded
    by the crops and the output, not by the image: windows go through the model a few at a time
    (`crops_per_batch` crops per forward, at least one window of every image), and their logits
    are added in place into the output-sized sum; the count map is one `(1, 1, H, W)` plane.
    """
    h_crop, w_crop = model.test_cfg["crop_size"]
    n, _, h_img, w_img = inputs.shape
    check_slide_windows((h_img, w_img), model.test_cfg["crop_size"], model.test_cfg["stride"])
    windows = slide_windows((h_img, w_img), model.test_cfg["crop_size"], model.test_cfg["stride"])
    min_h, min_w = min_input_size(model, inputs) or (1, 1)
    window_hw = (max(h_crop, min_h), max(w_crop, min_w))  # what the model sees
    preds = inputs.new_zeros((n, model.out_channels, h_img, w_img))
    count = inputs.new_zeros((1, 1, h_img, w_img))
    per_forward = max(1, crops_per_batch // n)
    for start in range(0, len(windows), per_forward):
        group = windows[start : start + per_forward]
        crops = torch.cat([inputs[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in group])
        crop_metas = [
            {**m, "img_shape": tuple(crops.shape[-2:]), "pad_shape": tuple(crops.shape[-2:])}
            for _ in group
            for m in batch_img_metas
        ]
        crop_logits = padded_encode_decode(model, crops, crop_metas, window_hw)
        for i, (y1, y2, x1, x2) in enumerate(group):
            preds[:, :, y1:y2, x1:x2] += crop_logits[i * n : (i + 1) * n]
            count[:, :, y1:y2, x1:x2] += 1
        del crops, crop_logits
    return preds.div_(count)


def padded_encode_decode(
    model: Any, inputs: torch.Tensor, batch_img_metas: list[dict], min_hw: Sequence[int] | None
) -> torch.Tensor:
    """`encode_decode` of `inputs` padded right/bottom with `pad_val` to at least `min_hw`, its
    logits cropped back to the input size; inputs already that large go through untouched."""
    h, w = inputs.shape[-2:]
    if min_hw is None or (h >= min_hw[0] and w >= min_hw[1]):
        return model.encode_decode(inputs, batch_img_metas)
    pad_h, pad_w = max(h, int(min_hw[0])), max(w, int(min_hw[1]))
    padded = F.pad(inputs, (0, pad_w - w, 0, pad_h - h), value=model.pad_val)
    metas = [{**m, "pad_shape": (pad_h, pad_w)} for m in batch_img_metas]
    return model.encode_decode(padded, metas)[:, :, :h, :w]


def min_input_size(model: Any, like: torch.Tensor) -> tuple[int, int] | None:
    """The smallest `(h, w)` input the network (backbone, neck, decode head) takes; None if unknown.

    Found once, by running the network (eval mode, no grad) on blank inputs, squares of 1, 2, 4,
    ... 512 pixels, then bisecting the height and width; the result is kept on the model. A size
    at which the forward raises counts as too small: that error is never shown, but no real image
    is ever hidden by it either; an image the network cannot take even padded to this size fails
    with the network's own error. None when no square up to 512 runs (a network that takes only
    one fixed size, say): inputs are then never padded. Assumes, as for convolutional and MiT
    backbones, that a network taking a size takes every larger one. `like` gives the channels,
    device and dtype of the blank inputs.
    """
    cached = model.__dict__.get("_min_input_hw", _UNKNOWN)
    if cached is not _UNKNOWN:
        return cached
    channels = like.shape[1]

    def runs(h: int, w: int) -> bool:
        x = like.new_zeros((1, channels, h, w))
        meta = {"ori_shape": (h, w), "img_shape": (h, w), "pad_shape": (h, w)}
        try:
            model.encode_decode(x, [meta])
        except Exception:  # too small for some layer (a conv kernel, a pooling, an assert, ...)
            return False
        return True

    def smallest(lo: int, hi: int, fits) -> int:  # fits(lo) is False or lo == 0, fits(hi) is True
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(mid) else (mid, hi)
        return hi

    # Eval mode for the probe (no BN statistics updated); each module's own mode is restored after it,
    # so a frozen BN stays in eval in a training model.
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            result = None
            side, previous = 1, 0
            while side <= _MAX_PROBE and not runs(side, side):
                side, previous = side * 2, side
            if side <= _MAX_PROBE:
                square = smallest(previous, side, lambda s: runs(s, s))
                result = (
                    smallest(0, square, lambda s: runs(s, square)),
                    smallest(0, square, lambda s: runs(square, s)),
                )
    finally:
        for module, training in modes:
            module.training = training
    if result is not None and result != (1, 1):
        logger.info(
            "the network takes inputs of at least %dx%d (h x w); smaller images and slide windows are "
            "padded with pad_val=%s up to that size and their logits cropped back",
            *result,
            model.pad_val,
        )
    model.__dict__["_min_input_hw"] = result
    return result


def slide_windows(
    img_hw: Sequence[int], crop_size: Sequence[int], stride: Sequence[int]
) -> list[tuple[int, int, int, int]]:
    """The `(y1, y2, x1, x2)` windows of slide inference over an `img_hw` image, row by row.

    As MMSegmentation: a window every `stride`, the last of a row/column shifted back to end at the
    border, none larger than the image.
    """
    (h_img, w_img), (h_crop, w_crop), (h_stride, w_stride) = img_hw, crop_size, stride
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, h_img)
            x2 = min(w_idx * w_stride + w_crop, w_img)
            windows.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return windows
