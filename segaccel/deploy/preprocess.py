"""`ExportedPreProcessor`: the test-time batching of `SegDataPreProcessor`, left in uint8.

The exported graph normalises itself, so the runtime only stacks the images, padding them right and
bottom (with zeros, marked as padding in the mask the graph receives) to the size the PyTorch
preprocessor pads to at test time: its `test_cfg` `size`, or the batch's largest image rounded up
to `size_divisor`, else the largest image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segaccel.structures import SegDataSample


class ExportedPreProcessor(nn.Module):
    """`dict(inputs=list[uint8 (C, H, W)], data_samples)` → `dict(inputs=uint8 (N, C, H, W), data_samples)`.

    Args:
        channels: the image channels the graph takes.
        test_size: pad every image to this `(h, w)`.
        test_size_divisor: pad the batch to its largest size rounded up to a multiple of this.
    """

    def __init__(
        self,
        channels: int = 3,
        test_size: Sequence[int] | None = None,
        test_size_divisor: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.test_size = tuple(test_size) if test_size is not None else None
        self.test_size_divisor = test_size_divisor

    def padded_size(self, shapes: list[tuple[int, int]]) -> tuple[int, int]:
        """The `(h, w)` a batch of images of these sizes is padded to."""
        if self.test_size is not None:
            return self.test_size
        h = max(s[0] for s in shapes)
        w = max(s[1] for s in shapes)
        if self.test_size_divisor:
            d = self.test_size_divisor
            h, w = -(-h // d) * d, -(-w // d) * d
        return h, w

    def forward(self, data: dict[str, Any], training: bool = False) -> dict[str, Any]:
        """Stack and pad; each returned sample (a copy) gets `img_shape`, `pad_shape`, `padding_size`."""
        if training:
            raise ValueError("an exported model only predicts: training=True is not supported")
        if not isinstance(data, dict) or "inputs" not in data:
            raise TypeError("ExportedPreProcessor expects a dict with `inputs` (and `data_samples`)")
        inputs = data["inputs"]
        if isinstance(inputs, torch.Tensor):
            inputs = list(inputs) if inputs.dim() == 4 else [inputs]
        if not inputs:
            raise ValueError("inputs: empty batch")
        data_samples = data.get("data_samples")
        if data_samples is not None and len(data_samples) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs but {len(data_samples)} data_samples")
        for i, img in enumerate(inputs):
            if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.dtype != torch.uint8:
                got = (tuple(img.shape), img.dtype) if isinstance(img, torch.Tensor) else type(img).__name__
                raise ValueError(f"inputs[{i}]: expected a uint8 (C, H, W) tensor, got {got}")
            if img.shape[0] != self.channels:
                raise ValueError(f"inputs[{i}]: {img.shape[0]} channels but the graph takes {self.channels}")
        pad_h, pad_w = self.padded_size([tuple(img.shape[-2:]) for img in inputs])
        padded, paddings = [], []
        for i, img in enumerate(inputs):
            h, w = img.shape[-2:]
            if h > pad_h or w > pad_w:
                raise ValueError(f"inputs[{i}]: image of size {(h, w)} is larger than size={self.test_size}")
            padding = (0, pad_w - w, 0, pad_h - h)
            paddings.append(padding)
            img = img.cpu()
            padded.append(F.pad(img, padding) if any(padding) else img)
        batch = torch.stack(padded)
        if data_samples is None:
            return {"inputs": batch, "data_samples": None}
        out = []
        for i, (sample, img, padding) in enumerate(zip(data_samples, inputs, paddings)):
            if not isinstance(sample, SegDataSample):
                raise TypeError(f"data_samples[{i}]: expected a SegDataSample, got {type(sample).__name__}")
            sample = sample.to("cpu")
            sample.set_metainfo(
                {"img_shape": tuple(img.shape[-2:]), "pad_shape": (pad_h, pad_w), "padding_size": padding}
            )
            out.append(sample)
        return {"inputs": batch, "data_samples": out}

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, test_size={self.test_size}, "
            f"test_size_divisor={self.test_size_divisor}"
        )
