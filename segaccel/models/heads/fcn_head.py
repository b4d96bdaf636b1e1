"""FCN head (Long et al., 2015) as MMSegmentation's `FCNHead`: a few convs, optionally fused with the input.

Also the usual auxiliary head of the dilated-ResNet models (`num_convs=1`, `concat_input=False`).
Weights: `convs.{i}.conv/bn`, `conv_cat.conv/bn`, `conv_seg`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from segaccel.models.heads.decode_head import BaseDecodeHead
from segaccel.models.utils import ConvModule


class FCNHead(BaseDecodeHead):
    """`num_convs` convs → optionally concatenated with the input and fused (`conv_cat`) → classifier.

    Args:
        num_convs: number of convs (0: the input itself; then `in_channels` must equal `channels`).
        kernel_size: their kernel size.
        concat_input: concatenate the input with the convs' output and fuse them (`conv_cat`).
        dilation: their dilation.
        **kwargs: `BaseDecodeHead` arguments (`in_channels`, `channels`, `num_classes`, ...).
    """

    def __init__(
        self,
        num_convs: int = 2,
        kernel_size: int = 3,
        concat_input: bool = True,
        dilation: int = 1,
        **kwargs: Any,
    ) -> None:
        if num_convs < 0 or not isinstance(dilation, int) or dilation < 1:
            raise ValueError(f"FCNHead: need num_convs >= 0 and dilation >= 1, got {num_convs}, {dilation}")
        super().__init__(**kwargs)
        self.num_convs = num_convs
        self.concat_input = concat_input
        self.kernel_size = kernel_size
        if num_convs == 0:
            if self.in_channels != self.channels:
                raise ValueError(
                    f"FCNHead: num_convs=0 passes the input through, so in_channels ({self.in_channels}) "
                    f"must equal channels ({self.channels})"
                )
            self.convs = nn.Identity()
        else:
            padding = (kernel_size // 2) * dilation
            convs = [
                ConvModule(
                    self.in_channels if i == 0 else self.channels,
                    self.channels,
                    kernel_size,
                    padding=padding,
                    dilation=dilation,
                    conv_cfg=self.conv_cfg,
                    norm_cfg=self.norm_cfg,
                    act_cfg=self.act_cfg,
                )
                for i in range(num_convs)
            ]
            self.convs = nn.Sequential(*convs)
        if concat_input:
            self.conv_cat = ConvModule(
                self.in_channels + self.channels,
                self.channels,
                kernel_size,
                padding=kernel_size // 2,
                conv_cfg=self.conv_cfg,
                norm_cfg=self.norm_cfg,
                act_cfg=self.act_cfg,
            )

    def _forward_feature(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Features before the classifier `(N, channels, h, w)`."""
        x = self._transform_inputs(inputs)
        feats = self.convs(x)
        if self.concat_input:
            feats = self.conv_cat(torch.cat([x, feats], dim=1))
        return feats

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Features → logits `(N, out_channels, h, w)` at the selected input's size."""
        return self.cls_seg(self._forward_feature(inputs))
