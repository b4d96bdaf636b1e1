"""The sine position encoding of DETR for 2-D maps (mmdet's `SinePositionalEncoding`)."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinePositionalEncoding(nn.Module):
    """Sine/cosine of the row and column index at `num_feats` frequencies each, concatenated `(y, x)`.

    Args:
        num_feats: channels per axis (the encoding has `2 * num_feats` channels).
        temperature: the frequencies' base.
        normalize: scale the indices to `(0, scale]` over the map (size-independent encodings).
        scale: the range when normalising (2π).
        eps: added to the denominator when normalising.
        offset: added to the indices before normalising.
    """

    def __init__(
        self,
        num_feats: int = 128,
        temperature: int = 10000,
        normalize: bool = True,
        scale: float = 2 * math.pi,
        eps: float = 1e-6,
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps
        self.offset = offset

    def forward(self, n: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The encoding of an unpadded `(h, w)` map, `(n, 2 * num_feats, h, w)`."""
        y = torch.arange(1, h + 1, device=device, dtype=dtype)[:, None].expand(h, w)
        x = torch.arange(1, w + 1, device=device, dtype=dtype)[None, :].expand(h, w)
        if self.normalize:
            y = (y + self.offset) / (y[-1:, :] + self.eps) * self.scale
            x = (x + self.offset) / (x[:, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.num_feats, device=device, dtype=torch.int64).to(dtype)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_feats)
        pos_x = x[:, :, None] / dim_t
        pos_y = y[:, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, 0::2].sin(), pos_x[:, :, 1::2].cos()), dim=3).flatten(2)
        pos_y = torch.stack((pos_y[:, :, 0::2].sin(), pos_y[:, :, 1::2].cos()), dim=3).flatten(2)
        pos = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)
        return pos.unsqueeze(0).expand(n, -1, -1, -1)

    def extra_repr(self) -> str:
        return f"num_feats={self.num_feats}, temperature={self.temperature}, normalize={self.normalize}"
