"""DeepLabV3's head (Chen et al., 2017) as MMSegmentation's `ASPPHead`: atrous spatial pyramid pooling.

Weights: `image_pool.1.conv/bn`, `aspp_modules.{i}.conv/bn`, `bottleneck.conv/bn`, `conv_seg`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segaccel.models.heads.decode_head import BaseDecodeHead
from segaccel.models.utils import ConvModule, resize


class ASPPModule(nn.ModuleList):
    """Parallel convs: 1x1 for dilation 1, else 3x3 with that dilation. `forward(x)` → list of maps."""

    def __init__(
        self,
        dilations: Sequence[int],
        in_channels: int,
        channels: int,
        conv_cfg: dict[str, Any] | None,
        norm_cfg: dict[str, Any] | None,
        act_cfg: dict[str, Any] | None,
    ) -> None:
        super().__init__()
        self.dilations = tuple(dilations)
        self.in_channels = in_channels
        self.channels = channels
        for dilation in self.dilations:
            self.append(
                ConvModule(
                    in_channels,
                    channels,
                    1 if dilation == 1 else 3,
                    dilation=dilation,
                    padding=0 if dilation == 1 else dilation,
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg,
                )
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [module(x) for module in self]


class ASPPHead(BaseDecodeHead):
    """Image pooling + parallel dilated convs, concatenated → 3x3 bottleneck → classifier.

    Args:
        dilations: one branch per dilation (1 is a 1x1 conv).
        **kwargs: `BaseDecodeHead` arguments.
    """

    def __init__(self, dilations: Sequence[int] = (1, 6, 12, 18), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(dilations, (list, tuple)) or not dilations:
            raise ValueError(f"{type(self).__name__}: dilations must be a non-empty list, got {dilations!r}")
        self.dilations = tuple(dilations)
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            ConvModule(
                self.in_channels,
                self.channels,
                1,
                conv_cfg=self.conv_cfg,
                norm_cfg=self.norm_cfg,
                act_cfg=self.act_cfg,
            ),
        )
        self.aspp_modules = ASPPModule(
            self.dilations,
            self.in_channels,
            self.channels,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg,
        )
        self.bottleneck = ConvModule(
            (len(self.dilations) + 1) * self.channels,
            self.channels,
            3,
            padding=1,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg,
        )

    def _aspp(self, x: torch.Tensor) -> torch.Tensor:
        """Image pool and the dilated branches, concatenated and fused: `(N, channels, h, w)`."""
        pooled = resize(
            self.image_pool(x), size=x.shape[2:], mode="bilinear", align_corners=self.align_corners
        )
        return self.bottleneck(torch.cat([pooled, *self.aspp_modules(x)], dim=1))

    def _forward_feature(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self._aspp(self._transform_inputs(inputs))

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Features → logits `(N, out_channels, h, w)` at the selected input's size."""
        return self.cls_seg(self._forward_feature(inputs))
