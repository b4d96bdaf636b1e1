"""UPerNet's head (Xiao et al., 2018) as MMSegmentation's `UPerHead`: PPM on the top stage + FPN fusion.

Weights: `psp_modules.{i}.1.conv/bn`, `bottleneck`, `lateral_convs.{i}`, `fpn_convs.{i}`,
`fpn_bottleneck` (all ConvModules), `conv_seg`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segaccel.models.heads.decode_head import BaseDecodeHead
from segaccel.models.heads.psp_head import PPM
from segaccel.models.utils import ConvModule, resize


class UPerHead(BaseDecodeHead):
    """Unified perceptual parsing head over several stages → logits at the first stage's size.

    The last stage goes through pyramid pooling (`psp_modules` + `bottleneck`); the others through
    1x1 `lateral_convs`; a top-down pathway adds each level to the one below, 3x3 `fpn_convs` smooth
    them, and all levels, upsampled to the first, are fused by `fpn_bottleneck`.

    Args:
        pool_scales: PPM pool sizes.
        **kwargs: `BaseDecodeHead` arguments; `in_channels`/`in_index` are lists (one per stage).
    """

    def __init__(
        self,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        input_transform: str = "multiple_select",
        **kwargs: Any,
    ) -> None:
        super().__init__(input_transform=input_transform, **kwargs)
        if self.input_transform != "multiple_select":
            raise ValueError(
                f"UPerHead: input_transform must be 'multiple_select', got {self.input_transform!r}"
            )
        cfg = dict(conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.pool_scales = tuple(pool_scales)
        self.psp_modules = PPM(
            self.pool_scales, self.in_channels[-1], self.channels, align_corners=self.align_corners, **cfg
        )
        self.bottleneck = ConvModule(
            self.in_channels[-1] + len(self.pool_scales) * self.channels, self.channels, 3, padding=1, **cfg
        )
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, self.channels, 1, inplace=False, **cfg) for c in self.in_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(
            ConvModule(self.channels, self.channels, 3, padding=1, inplace=False, **cfg)
            for _ in self.in_channels[:-1]
        )
        self.fpn_bottleneck = ConvModule(
            len(self.in_channels) * self.channels, self.channels, 3, padding=1, **cfg
        )

    def psp_forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Pyramid pooling of the last stage: `(N, channels, h_top, w_top)`."""
        x = inputs[-1]
        return self.bottleneck(torch.cat([x, *self.psp_modules(x)], dim=1))

    def _forward_feature(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        inputs = self._transform_inputs(inputs)
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(inputs))
        for i in range(len(laterals) - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + resize(
                laterals[i], size=laterals[i - 1].shape[2:], mode="bilinear", align_corners=self.align_corners
            )
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)]
        outs.append(laterals[-1])
        size = outs[0].shape[2:]
        outs = [outs[0]] + [
            resize(out, size=size, mode="bilinear", align_corners=self.align_corners) for out in outs[1:]
        ]
        return self.fpn_bottleneck(torch.cat(outs, dim=1))

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Stage features → logits `(N, out_channels, h_0, w_0)`."""
        return self.cls_seg(self._forward_feature(inputs))
