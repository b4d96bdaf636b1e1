"""Whole and slide inference around an exported graph, and the post-processing back to `ori_shape`.

The same arithmetic as the PyTorch model's (`Segmentor.inference`, `postprocess_result`), done on
uint8 pixels with a padding mask instead of normalised floats: wherever PyTorch pads with the
preprocessor's `pad_val` after normalising, the runtime pads with zeros and a mask of zeros, and
the graph puts `pad_val` there. `run(pixel_values, pixel_mask) -> logits` is any backend
(`segaccel.deploy.backends`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from segaccel.structures import PixelData, SegDataSample

Run = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
FLIP_DIMS = {"horizontal": (-1,), "vertical": (-2,), "diagonal": (-2, -1)}


def padding_mask(shape: Sequence[int], metas: Sequence[dict]) -> torch.Tensor:
    """uint8 `(N, H, W)`: 1 inside each image's unpadded region (`padding_size`, else `img_shape`)."""
    n, h, w = shape
    mask = torch.zeros((n, h, w), dtype=torch.uint8)
    for i, meta in enumerate(metas):
        padding = meta.get("padding_size")
        if padding is None:
            img_h, img_w = meta.get("img_shape", (h, w))
            padding = (0, w - int(img_w), 0, h - int(img_h))
        left, right, top, bottom = (int(p) for p in padding)
        mask[i, top : h - bottom, left : w - right] = 1
    return mask


def padded_run(
    run: Run, inputs: torch.Tensor, mask: torch.Tensor, min_hw: Sequence[int] | None
) -> torch.Tensor:
    """`run` on inputs padded right/bottom (mask 0) to at least `min_hw`, logits cropped back."""
    h, w = inputs.shape[-2:]
    if min_hw is None or (h >= min_hw[0] and w >= min_hw[1]):
        return run(inputs, mask)
    pad_h, pad_w = max(h, int(min_hw[0])), max(w, int(min_hw[1]))
    inputs = F.pad(inputs, (0, pad_w - w, 0, pad_h - h))
    mask = F.pad(mask, (0, pad_w - w, 0, pad_h - h))
    return run(inputs, mask)[:, :, :h, :w]


def whole_inference(
    run: Run, inputs: torch.Tensor, mask: torch.Tensor, min_hw: Sequence[int] | None = None
) -> torch.Tensor:
    """The whole batch in one call: uint8 `(N, C, H, W)` → logits `(N, out_channels, H, W)`."""
    return padded_run(run, inputs, mask, min_hw)


def slide_windows(
    img_hw: Sequence[int], crop_size: Sequence[int], stride: Sequence[int]
) -> list[tuple[int, int, int, int]]:
    """The `(y1, y2, x1, x2)` windows over an `img_hw` image, row by row, as MMSegmentation's slide
    inference: one every `stride`, the last of a row/column shifted back to end at the border."""
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


def slide_inference(
    run: Run,
    inputs: torch.Tensor,
    mask: torch.Tensor,
    crop_size: Sequence[int],
    stride: Sequence[int],
    out_channels: int,
    min_hw: Sequence[int] | None = None,
    crops_per_batch: int = 4,
) -> torch.Tensor:
    """Overlapping `crop_size` windows every `stride`, cut and summed around `run`.

    Windows smaller than the crop (an image smaller than it) are padded to `crop_size` (and to
    `min_hw`) and their logits cropped back, so the graph only sees crop-sized inputs, as the
    PyTorch model does. Memory is bounded by `crops_per_batch` crops per call (at least one window
    of every image) plus the output-sized float32 sum and a `(1, 1, H, W)` count map.
    """
    h_crop, w_crop = crop_size
    n, _, h_img, w_img = inputs.shape
    windows = slide_windows((h_img, w_img), crop_size, stride)
    min_h, min_w = min_hw or (1, 1)
    window_hw = (max(h_crop, min_h), max(w_crop, min_w))
    preds = torch.zeros((n, out_channels, h_img, w_img), dtype=torch.float32)
    count = torch.zeros((1, 1, h_img, w_img), dtype=torch.float32)
    per_call = max(1, crops_per_batch // n)
    for start in range(0, len(windows), per_call):
        group = windows[start : start + per_call]
        crops = torch.cat([inputs[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in group])
        masks = torch.cat([mask[:, y1:y2, x1:x2] for y1, y2, x1, x2 in group])
        crop_logits = padded_run(run, crops, masks, window_hw)
        for i, (y1, y2, x1, x2) in enumerate(group):
            preds[:, :, y1:y2, x1:x2] += crop_logits[i * n : (i + 1) * n]
            count[:, :, y1:y2, x1:x2] += 1
        del crops, masks, crop_logits
    return preds.div_(count)


def postprocess(
    seg_logits: torch.Tensor,
    data_samples: list[SegDataSample],
    align_corners: bool = False,
    threshold: float | None = None,
) -> list[SegDataSample]:
    """Per sample: drop the padding, undo the flip, resize to `ori_shape`, then argmax.

    Writes `seg_logits` (float32 `(C, H, W)`; sigmoid probabilities for a 1-channel graph) and
    `pred_sem_seg` (int64 `(1, H, W)`; `> threshold` for a 1-channel graph), as
    `Segmentor.postprocess_result` does.
    """
    _, channels, h, w = seg_logits.shape
    for i, sample in enumerate(data_samples):
        meta = sample.metainfo
        padding = meta.get("padding_size")
        if padding is None:
            img_h, img_w = meta.get("img_shape", (h, w))
            padding = (0, w - img_w, 0, h - img_h)
        left, right, top, bottom = (int(p) for p in padding)
        logits = seg_logits[i : i + 1, :, top : h - bottom, left : w - right]
        if meta.get("flip"):
            direction = meta.get("flip_direction")
            if direction not in FLIP_DIMS:
                raise ValueError(
                    f"data_samples[{i}]: flip_direction {direction!r} is not one of {', '.join(FLIP_DIMS)}"
                )
            logits = logits.flip(dims=FLIP_DIMS[direction])
        ori_shape = tuple(int(s) for s in meta.get("ori_shape", logits.shape[-2:]))
        if tuple(logits.shape[-2:]) != ori_shape:
            logits = F.interpolate(logits, size=ori_shape, mode="bilinear", align_corners=align_corners)
        logits = logits[0]
        if channels > 1:
            pred = logits.argmax(dim=0, keepdim=True)
        else:
            logits = logits.sigmoid()
            pred = (logits > (0.3 if threshold is None else threshold)).long()
        sample.seg_logits = PixelData(logits)
        sample.pred_sem_seg = PixelData(pred)
    return data_samples
