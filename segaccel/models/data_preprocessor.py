"""SegDataPreProcessor: the first layer of the model (device, float, normalise, pad, stack).

It receives the collated batch, `dict(inputs=list[uint8 (C, H, W)], data_samples=list[SegDataSample])`,
and returns `dict(inputs=float (N, C, H, W) on the model's device, data_samples)`. Images travel to
the device as uint8 (4x less to copy than float) and become float there, as in MMSegmentation.

Padding follows MMSegmentation's `SegDataPreProcessor`: `size`/`size_divisor` pad training batches;
at test time images are padded only as `test_cfg` asks (`{size: ...}` or `{size_divisor: ...}`), so a
model sees the image as it is (attention models give other logits on padded images). A test batch of
images of different sizes, which MMSegmentation refuses, is padded to its largest image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segaccel.models.batch_augments import apply_batch_augments, has_batch_augments
from segaccel.registry import ConfigError
from segaccel.structures import PixelData, SegDataSample


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"data_preprocessor.{name}: expected an int or (h, w), got {value!r}")


class SegDataPreProcessor(nn.Module):
    """Move a batch to the device, normalise it and pad it into one `(N, C, H, W)` tensor.

    Args:
        mean, std: per-channel values on the 0–255 scale, RGB order; `None` (both) skips
            normalisation. Kept as non-persistent buffers: they follow the module to the device
            but stay out of the state dict (they are configuration, written to `config.json`).
        size: in training, pad every image on the right/bottom to this `(h, w)` (MMSegmentation
            configs set it to the crop size).
        size_divisor: in training, pad the batch to the largest `(h, w)` rounded up to a multiple of
            this. With neither `size` nor `size_divisor`, pad to the largest image in the batch.
        pad_val: value of padded image pixels (after normalisation, as in MMSegmentation).
        seg_pad_val: value of padded label pixels (training only; 255 = ignore).
        test_cfg: padding at test time, `{size: (h, w)}` or `{size_divisor: d}` (MMSegmentation's
            `data_preprocessor.test_cfg`); None (default): none beyond the batch's largest image.
        channel_order: the channel order the network takes, `rgb` (images arrive as RGB) or `bgr`
            (channels reversed first; models trained by MMSegmentation without `bgr_to_rgb`).
            `mean`/`std` are given in this order.
    """

    def __init__(
        self,
        mean: Sequence[float] | None = (123.675, 116.28, 103.53),
        std: Sequence[float] | None = (58.395, 57.12, 57.375),
        size: int | Sequence[int] | None = None,
        size_divisor: int | None = None,
        pad_val: float = 0,
        seg_pad_val: int = 255,
        test_cfg: dict[str, Any] | None = None,
        channel_order: str = "rgb",
    ) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ConfigError("data_preprocessor: give both `mean` and `std`, or neither")
        if mean is not None and len(mean) != len(std):
            raise ConfigError(f"data_preprocessor: mean {list(mean)} and std {list(std)} differ in length")
        if mean is not None and any(s <= 0 for s in std):
            raise ConfigError(f"data_preprocessor.std must be positive, got {list(std)}")
        if size is not None and size_divisor is not None:
            raise ConfigError("data_preprocessor: give `size` or `size_divisor`, not both")
        if size_divisor is not None and (not isinstance(size_divisor, int) or size_divisor < 1):
            raise ConfigError(f"data_preprocessor.size_divisor must be a positive int, got {size_divisor!r}")
        if channel_order not in ("rgb", "bgr"):
            raise ConfigError(f"data_preprocessor.channel_order: 'rgb' or 'bgr', got {channel_order!r}")
        self.size = _pair(size, "size") if size is not None else None
        self.size_divisor = size_divisor
        self.test_size, self.test_size_divisor = _test_padding(test_cfg)
        self.test_cfg = test_cfg
        self.channel_order = channel_order
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val
        self.normalize = mean is not None
        mean_t = torch.tensor(mean if mean is not None else [0.0], dtype=torch.float32).view(-1, 1, 1)
        std_t = torch.tensor(std if std is not None else [1.0], dtype=torch.float32).view(-1, 1, 1)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def forward(self, data: dict[str, Any], training: bool = False) -> dict[str, Any]:
        """`dict(inputs=list[(C, H, W)], data_samples)` → `dict(inputs=float (N, C, H, W), data_samples)`.

        Each sample gets `img_shape` (the unpadded size), `pad_shape` and `padding_size`
        `(left, right, top, bottom)` in its metainfo; in training its `gt_sem_seg` is padded with
        `seg_pad_val` to the same size. Returned samples are copies on the device; the input
        samples are not modified.
        """
        if not isinstance(data, dict) or "inputs" not in data:
            raise TypeError("SegDataPreProcessor expects a dict with `inputs` (and `data_samples`)")
        inputs = data["inputs"]
        if isinstance(inputs, torch.Tensor):
            if inputs.dim() != 4:
                raise ValueError(f"inputs: expected (N, C, H, W) or a list of (C, H, W), got {inputs.shape}")
            inputs = list(inputs)
        if not inputs:
            raise ValueError("inputs: empty batch")
        data_samples = data.get("data_samples")
        if data_samples is not None and len(data_samples) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs but {len(data_samples)} data_samples")
        if training and data_samples is None:
            raise ValueError("training needs `data_samples` with `gt_sem_seg`")
        if training and has_batch_augments(data_samples):  # drawn by the pipeline, applied here (uint8)
            inputs, data_samples = apply_batch_augments(inputs, data_samples, self.device)

        device = self.device
        images = []
        for i, img in enumerate(inputs):
            if not isinstance(img, torch.Tensor) or img.dim() != 3:
                got = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
                raise ValueError(f"inputs[{i}]: expected a (C, H, W) tensor, got {got}")
            if self.normalize and img.shape[0] != self.mean.shape[0]:
                raise ValueError(
                    f"inputs[{i}]: {img.shape[0]} channels but mean/std have {self.mean.shape[0]} values"
                )
            img = img.to(device, non_blocking=True).float()
            if self.channel_order == "bgr" and img.shape[0] == 3:
                img = img.flip(0)
            if self.normalize:
                img = (img - self.mean) / self.std
            images.append(img)

        pad_h, pad_w = self.padded_size([tuple(img.shape[-2:]) for img in images], training)
        padded, paddings = [], []
        for i, img in enumerate(images):
            h, w = img.shape[-2:]
            if h > pad_h or w > pad_w:
                size = self.size if training else self.test_size
                raise ValueError(f"inputs[{i}]: image of size {(h, w)} is larger than size={size}")
            padding = (0, pad_w - w, 0, pad_h - h)  # (left, right, top, bottom), F.pad order
            paddings.append(padding)
            padded.append(F.pad(img, padding, value=self.pad_val) if any(padding) else img)
        batch = torch.stack(padded, dim=0)

        if data_samples is None:
            return {"inputs": batch, "data_samples": None}
        out_samples = []
        for i, (sample, img, padding) in enumerate(zip(data_samples, images, paddings)):
            if not isinstance(sample, SegDataSample):
                raise TypeError(f"data_samples[{i}]: expected a SegDataSample, got {type(sample).__name__}")
            sample = sample.to(device, non_blocking=True)
            if training:
                sample.gt_sem_seg = self._pad_label(sample, i, tuple(img.shape[-2:]), padding)
            sample.set_metainfo(
                {"img_shape": tuple(img.shape[-2:]), "pad_shape": (pad_h, pad_w), "padding_size": padding}
            )
            out_samples.append(sample)
        return {"inputs": batch, "data_samples": out_samples}

    def padded_size(self, shapes: list[tuple[int, int]], training: bool = False) -> tuple[int, int]:
        """The `(h, w)` a batch of images of these `(h, w)` sizes is padded to, in training or at test."""
        if training:
            size, divisor = self.size, self.size_divisor
        else:
            size, divisor = self.test_size, self.test_size_divisor
        if size is not None:
            return size
        h = max(s[0] for s in shapes)
        w = max(s[1] for s in shapes)
        if divisor is not None:
            h, w = -(-h // divisor) * divisor, -(-w // divisor) * divisor
        return h, w

    def _pad_label(
        self, sample: SegDataSample, index: int, img_hw: tuple[int, int], padding: tuple[int, ...]
    ) -> PixelData:
        if "gt_sem_seg" not in sample:
            raise ValueError(f"data_samples[{index}] ({sample.get('img_id')}): training needs gt_sem_seg")
        gt = sample.gt_sem_seg
        if gt.shape != img_hw:
            raise ValueError(
                f"data_samples[{index}] ({sample.get('img_id')}): gt_sem_seg is {gt.shape} but the "
                f"image is {img_hw}; image and label must have the same size in training"
            )
        if not any(padding):
            return gt
        return PixelData(F.pad(gt.data, padding, value=self.seg_pad_val), **gt.metainfo)

    def extra_repr(self) -> str:
        return (
            f"normalize={self.normalize}, size={self.size}, size_divisor={self.size_divisor}, "
            f"test_cfg={self.test_cfg}, pad_val={self.pad_val}, seg_pad_val={self.seg_pad_val}, "
            f"channel_order={self.channel_order!r}"
        )


def _test_padding(test_cfg: dict[str, Any] | None) -> tuple[tuple[int, int] | None, int | None]:
    """`(size, size_divisor)` of a `test_cfg` (`{size: (h, w)}` or `{size_divisor: d}`), checked."""
    if test_cfg is None:
        return None, None
    if not isinstance(test_cfg, dict) or set(test_cfg) - {"size", "size_divisor"}:
        raise ConfigError(
            f"data_preprocessor.test_cfg: expected {{size: [h, w]}} or {{size_divisor: d}}, got {test_cfg!r}"
        )
    size, divisor = test_cfg.get("size"), test_cfg.get("size_divisor")
    if size is not None and divisor is not None:
        raise ConfigError("data_preprocessor.test_cfg: give `size` or `size_divisor`, not both")
    if divisor is not None and (not isinstance(divisor, int) or divisor < 1):
        raise ConfigError(f"data_preprocessor.test_cfg.size_divisor must be a positive int, got {divisor!r}")
    return (_pair(size, "test_cfg.size") if size is not None else None), divisor
