"""`MultiLevelNeck` (MMSegmentation's): one ViT resolution → a pyramid, for heads such as UPerHead.

Each input gets a 1x1 lateral conv, is resized by its `scales` entry (bilinear; `[4, 2, 1, 0.5]`
turns four stride-16 ViT levels into strides 4, 8, 16 and 32) and goes through a 3x3 conv. A single
input feeds every scale. Weights: `lateral_convs.{i}.conv`, `convs.{i}.conv` (+ their norms), so
MMSegmentation checkpoints map one to one; convs start Xavier-uniform, as MMSegmentation's
`init_weights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segaccel.models.utils import ConvModule, resize


class MultiLevelNeck(nn.Module):
    """ViT features `[(N, C_i, h, w)]` → `len(scales)` maps `(N, out_channels, h*s, w*s)`.

    Args:
        in_channels: channels of each input (one entry, or one per scale).
        out_channels: channels of every output.
        scales: resize factor of each output.
        norm_cfg, act_cfg: of every ConvModule (none by default).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        scales: Sequence[float] = (0.5, 1, 2, 4),
        norm_cfg: dict[str, Any] | None = None,
        act_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(in_channels, (list, tuple)):
            raise ValueError(f"MultiLevelNeck: in_channels must be a list, got {in_channels!r}")
        if len(in_channels) not in (1, len(scales)):
            raise ValueError(
                f"MultiLevelNeck: {len(in_channels)} inputs for {len(scales)} scales (1, or 1 per scale)"
            )
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.scales = [float(s) for s in scales]
        self.num_outs = len(scales)
        conv_args = {"norm_cfg": norm_cfg, "act_cfg": act_cfg}
        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, 1, **conv_args) for c in in_channels)
        self.convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, **conv_args) for _ in range(self.num_outs)
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"MultiLevelNeck: expected {len(self.in_channels)} inputs, got {len(inputs)}")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        if len(laterals) == 1:
            laterals = laterals * self.num_outs
        return tuple(
            conv(resize(x, scale_factor=scale, mode="bilinear"))
            for conv, x, scale in zip(self.convs, laterals, self.scales)
        )
