"""`ExportGraph`: what an exported model computes, from uint8 pixels to logits, as one `nn.Module`.

    pixel_values  uint8 (N, C, H, W)   the images as stored (RGB), padded right/bottom to one size
    pixel_mask    uint8 (N, H, W)      1 on image pixels, 0 on padding (transformers' name)
      → channel order (bgr models reverse the channels), float, (x - mean) / std,
        padding set to the preprocessor's `pad_val` (exactly what `SegDataPreProcessor` pads with)
      → backbone → neck → decode head → logits resized to (H, W) (`Segmentor.encode_decode`)
    logits        float32 (N, out_channels, H, W)

Normalisation lives inside the graph so a runtime feeds decoded image bytes and nothing else. The
mask is what lets a runtime pad (a batch of several sizes, `size_divisor`, slide windows smaller
than the crop, images smaller than the network takes) and still get exactly the PyTorch result,
whose padding is added after normalisation. A runtime that never pads feeds a mask of ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

INPUT_NAMES = ("pixel_values", "pixel_mask")
OUTPUT_NAMES = ("logits",)


class ExportGraph(nn.Module):
    """A `Segmentor`'s network with the data preprocessor's test-time arithmetic in front of it.

    Args:
        model: a built `Segmentor` (eval mode is set by the exporter).
        dtype: the dtype the network runs in (`torch.float32` or `torch.float16`); normalisation is
            done in float32 first, and the logits come back as float32 either way.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        pre = model.data_preprocessor
        self.model = model
        self.dtype = dtype
        self.normalize = bool(getattr(pre, "normalize", True))
        self.bgr = getattr(pre, "channel_order", "rgb") == "bgr"
        self.pad_val = float(getattr(pre, "pad_val", 0))
        mean = pre.mean.detach().float().reshape(1, -1, 1, 1).clone()
        std = pre.std.detach().float().reshape(1, -1, 1, 1).clone()
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
        """uint8 `(N, C, H, W)` + uint8 `(N, H, W)` → float32 logits `(N, out_channels, H, W)`."""
        x = pixel_values.float()
        if self.bgr:
            x = x.flip(1)
        if self.normalize:
            x = (x - self.mean) / self.std
        x = torch.where(pixel_mask.unsqueeze(1) != 0, x, torch.full_like(x[:1, :1, :1, :1], self.pad_val))
        x = x.to(self.dtype)
        hw = x.shape[-2:]
        metas: list[dict[str, Any]] = [{"img_shape": hw, "pad_shape": hw, "ori_shape": hw}]
        return self.model.encode_decode(x, metas).float()
