"""DeepLabV3+'s head (Chen et al., 2018) as MMSegmentation's `DepthwiseSeparableASPPHead`.

ASPP with depthwise-separable dilated branches on the deep features, upsampled and fused with
low-level features (`inputs[0]`, through the 1x1 `c1_bottleneck`) by two separable 3x3 convs.
Weights: those of `ASPPHead` (dilated branches as `aspp_modules.{i}.depthwise_conv/pointwise_conv`),
`c1_bottleneck.conv/bn`, `sep_bottleneck.{0,1}.depthwise_conv/pointwise_conv`, `conv_seg`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from segaccel.models.heads.aspp_head import ASPPHead
from segaccel.models.utils import ConvModule, DepthwiseSeparableConvModule, resize


class DepthwiseSeparableASPPHead(ASPPHead):
    """ASPP head whose dilated branches are separable, with a decoder on the low-level features.

    Args:
        c1_in_channels: channels of the low-level map (the backbone's first output, `inputs[0]`);
            0 means no low-level branch.
        c1_channels: channels it is reduced to.
        **kwargs: `ASPPHead` arguments (`dilations`, `in_channels`, `channels`, ...).
    """

    def __init__(self, c1_in_channels: int, c1_channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if c1_in_channels < 0 or (c1_in_channels > 0 and c1_channels <= 0):
            raise ValueError(
                f"DepthwiseSeparableASPPHead: need c1_in_channels >= 0 and c1_channels > 0 with it, got "
                f"{c1_in_channels}, {c1_channels}"
            )
        norm, act = self.norm_cfg, self.act_cfg
        for i, dilation in enumerate(self.dilations):
            if dilation > 1:
                self.aspp_modules[i] = DepthwiseSeparableConvModule(
                    self.in_channels,
                    self.channels,
                    3,
                    dilation=dilation,
                    padding=dilation,
                    norm_cfg=norm,
                    act_cfg=act,
                )
        if c1_in_channels > 0:
            self.c1_bottleneck = ConvModule(
                c1_in_channels, c1_channels, 1, conv_cfg=self.conv_cfg, norm_cfg=norm, act_cfg=act
            )
        else:
            self.c1_bottleneck = None
            c1_channels = 0
        self.sep_bottleneck = nn.Sequential(
            DepthwiseSeparableConvModule(
                self.channels + c1_channels, self.channels, 3, padding=1, norm_cfg=norm, act_cfg=act
            ),
            DepthwiseSeparableConvModule(
                self.channels, self.channels, 3, padding=1, norm_cfg=norm, act_cfg=act
            ),
        )

    def _forward_feature(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        output = self._aspp(self._transform_inputs(inputs))
        if self.c1_bottleneck is not None:
            c1_output = self.c1_bottleneck(inputs[0])
            output = resize(
                output, size=c1_output.shape[2:], mode="bilinear", align_corners=self.align_corners
            )
            output = torch.cat([output, c1_output], dim=1)
        return self.sep_bottleneck(output)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Features → logits `(N, out_channels, h, w)` at the low-level map's size (or the input's)."""
        return self.cls_seg(self._forward_feature(inputs))
