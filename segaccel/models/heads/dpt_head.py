"""`DPTHead`: Dense Prediction Transformer's decoder (Ranftl et al., 2021), as MMSegmentation's.

Four ViT levels are *reassembled* into a pyramid (the class token read out by `ignore`, `add` or
`project`; a 1x1 projection to `post_process_channels`; x4 and x2 transposed convs, identity, a
stride-2 conv), brought to `channels` by 3x3 convs, and *fused* top-down by residual units with x2
bilinear upsampling; a last 3x3 ConvModule and `conv_seg` give logits at half the input size.

The class token comes concatenated to each level by `TimmBackbone(with_cls_token=True)`: a level is
`(N, 2C, h, w)` = `[patch, cls]` — exactly the concatenation MMSegmentation's `project` readout feeds
its Linear. Module names are MMSegmentation's (`reassemble_blocks.projects.{i}.conv`,
`reassemble_blocks.resize_layers.{i}`, `reassemble_blocks.readout_projects.{i}.0`, `convs.{i}.conv`,
`fusion_blocks.{i}.project.conv`, `fusion_blocks.{i}.res_conv_unit{1,2}.conv{1,2}.{conv,bn}`,
`project.{conv,bn}`, `conv_seg`), so its checkpoints map one to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segaccel.models.heads.decode_head import BaseDecodeHead
from segaccel.models.utils import ConvModule, resize

_RELU = {"type": "ReLU"}
_BN = {"type": "BN"}
READOUT_TYPES = ("ignore", "add", "project")


class ReassembleBlocks(nn.Module):
    """Token maps `[(N, C or 2C, h, w)]` → `[(N, out_channels[i], h * r_i, w * r_i)]`, r = 4, 2, 1, 1/2."""

    def __init__(
        self,
        in_channels: int = 768,
        out_channels: Sequence[int] = (96, 192, 384, 768),
        readout_type: str = "ignore",
        patch_size: int = 16,
    ) -> None:
        super().__init__()
        if readout_type not in READOUT_TYPES:
            raise ValueError(f"DPTHead.readout_type: one of {READOUT_TYPES}, got {readout_type!r}")
        if len(out_channels) != 4:
            raise ValueError(f"DPTHead.post_process_channels: four levels, got {list(out_channels)}")
        self.in_channels = in_channels
        self.readout_type = readout_type
        self.patch_size = patch_size
        self.projects = nn.ModuleList(
            ConvModule(in_channels, c, kernel_size=1, act_cfg=None) for c in out_channels
        )
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4, padding=0),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2, padding=0),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        if readout_type == "project":
            self.readout_projects = nn.ModuleList(
                nn.Sequential(nn.Linear(2 * in_channels, in_channels), nn.GELU()) for _ in out_channels
            )

    def forward(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        c = self.in_channels
        readout = self.readout_type
        out = []
        for i, x in enumerate(inputs):
            if x.shape[1] not in (c, 2 * c) or (readout != "ignore" and x.shape[1] != 2 * c):
                need = f"{2 * c} (TimmBackbone with_cls_token)" if readout != "ignore" else c
                got = x.shape[1]
                raise ValueError(f"DPTHead: level {i} has {got} channels, readout {readout!r} needs {need}")
            patches = x[:, :c]
            if self.readout_type == "project":
                n, _, h, w = x.shape
                tokens = self.readout_projects[i](x.flatten(2).transpose(1, 2))  # (N, hw, 2C) -> (N, hw, C)
                patches = tokens.transpose(1, 2).reshape(n, c, h, w)
            elif self.readout_type == "add":
                patches = patches + x[:, c:]
            out.append(self.resize_layers[i](self.projects[i](patches)))
        return out


class PreActConvModule(ConvModule):
    """mmcv's `ConvModule(order=("act", "conv", "norm"))`: activation → conv → norm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_activation:
            x = self.activate(x)
        x = self.conv(x)
        return self.norm(x) if self.norm_name is not None else x


class PreActResidualConvUnit(nn.Module):
    """x + (act → conv3x3 → norm) twice."""

    def __init__(self, in_channels: int, act_cfg: dict[str, Any], norm_cfg: dict[str, Any] | None) -> None:
        super().__init__()
        args = dict(kernel_size=3, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg, bias=False, inplace=False)
        self.conv1 = PreActConvModule(in_channels, in_channels, **args)
        self.conv2 = PreActConvModule(in_channels, in_channels, **args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class FeatureFusionBlock(nn.Module):
    """(x + unit1(skip)) → unit2 → x2 bilinear → 1x1 projection."""

    def __init__(
        self,
        in_channels: int,
        act_cfg: dict[str, Any],
        norm_cfg: dict[str, Any] | None,
        expand: bool = False,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.expand = expand
        self.align_corners = align_corners
        self.out_channels = in_channels // 2 if expand else in_channels
        self.project = ConvModule(self.in_channels, self.out_channels, kernel_size=1, act_cfg=None, bias=True)
        self.res_conv_unit1 = PreActResidualConvUnit(in_channels, act_cfg, norm_cfg)
        self.res_conv_unit2 = PreActResidualConvUnit(in_channels, act_cfg, norm_cfg)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            skip = resize(skip, size=x.shape[2:], mode="bilinear", align_corners=False)
            x = x + self.res_conv_unit1(skip)
        x = self.res_conv_unit2(x)
        x = resize(x, scale_factor=2, mode="bilinear", align_corners=self.align_corners)
        return self.project(x)


class DPTHead(BaseDecodeHead):
    """Four ViT levels → logits `(N, out_channels, H/2, W/2)` (for a stride-16 ViT).

    Args:
        embed_dims: the ViT's channels `C` (levels carry `C`, or `2C` with the class token).
        post_process_channels: channels of the four reassembled levels.
        readout_type: `ignore` (drop the class token), `add` (add it) or `project` (Linear+GELU over
            `[patch, cls]`; DPT's and MMSegmentation's ADE20K config).
        patch_size: the ViT's patch size (recorded, as MMSegmentation's).
        expand_channels: double the post-process channels level by level.
        act_cfg, norm_cfg: of the fusion blocks and the last ConvModule.
        **kwargs: `BaseDecodeHead` arguments (`in_channels`, `in_index` of the four levels,
            `channels`, `num_classes`, ...); `input_transform` is `multiple_select`.
    """

    def __init__(
        self,
        embed_dims: int = 768,
        post_process_channels: Sequence[int] = (96, 192, 384, 768),
        readout_type: str = "ignore",
        patch_size: int = 16,
        expand_channels: bool = False,
        act_cfg: dict[str, Any] = _RELU,
        norm_cfg: dict[str, Any] = _BN,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("input_transform", "multiple_select")
        super().__init__(**kwargs)
        if self.input_transform != "multiple_select" or len(self.in_index) != 4:
            raise ValueError("DPTHead: input_transform multiple_select over four levels (in_index of 4)")
        self.expand_channels = expand_channels
        self.reassemble_blocks = ReassembleBlocks(embed_dims, post_process_channels, readout_type, patch_size)
        self.post_process_channels = [
            c * 2**i if expand_channels else c for i, c in enumerate(post_process_channels)
        ]
        self.convs = nn.ModuleList(
            ConvModule(c, self.channels, kernel_size=3, padding=1, act_cfg=None, bias=False)
            for c in self.post_process_channels
        )
        self.fusion_blocks = nn.ModuleList(
            FeatureFusionBlock(self.channels, act_cfg, norm_cfg) for _ in self.convs
        )
        self.fusion_blocks[0].res_conv_unit1 = None
        self.project = ConvModule(self.channels, self.channels, kernel_size=3, padding=1, norm_cfg=norm_cfg)
        self.num_fusion_blocks = len(self.fusion_blocks)
        self.num_reassemble_blocks = len(self.reassemble_blocks.resize_layers)
        self.num_post_process_channels = len(self.post_process_channels)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.reassemble_blocks(self._transform_inputs(inputs))
        x = [conv(feature) for conv, feature in zip(self.convs, x)]
        out = self.fusion_blocks[0](x[-1])
        for i in range(1, self.num_fusion_blocks):
            out = self.fusion_blocks[i](out, x[-(i + 1)])
        return self.cls_seg(self.project(out))
