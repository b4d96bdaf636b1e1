"""SegFormer's all-MLP decode head, in both published flavours (DESIGN.md §5).

`projection="conv"` (MMSegmentation's `SegformerHead`): each stage → 1x1 ConvModule (conv + BN +
ReLU) into `channels`, resized to the first stage's size, concatenated in stage order, fused by a
1x1 ConvModule `fusion_conv`, then `cls_seg`.

`projection="linear"` (the original code and transformers' `SegformerDecodeHead`): each stage →
`linear_c[i].proj` (a Linear on the tokens), resized to the first stage's size, concatenated in
*reverse* stage order, `linear_fuse` (1x1 conv without bias) → `batch_norm` → `activation` (ReLU) →
`dropout` (plain Dropout) → classifier. transformers' `decode_head.classifier` is our `conv_seg`; its
other decode-head names are ours unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segaccel.models.heads.decode_head import _DEFAULT_LOSS, _RELU, BaseDecodeHead
from segaccel.models.utils import ConvModule, build_activation, build_norm, resize

_BN = {"type": "BN", "requires_grad": True}  # shared default; never mutated
_PROJECTIONS = ("conv", "linear")


class SegformerMLP(nn.Module):
    """A Linear on the tokens of one stage (transformers' `SegformerMLP`, weights under `proj`)."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, C_in, h, w)` → `(N, channels, h, w)`."""
        n, _, h, w = x.shape
        x = self.proj(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(n, -1, h, w)


class SegformerHead(BaseDecodeHead):
    """SegFormer decode head over all backbone stages: features → logits `(N, out_channels, H/4, W/4)`.

    `in_channels` lists the channels of the stages used (`in_index`, default all of them, in order).
    `norm_cfg` defaults to BN. See the module docstring for the two `projection` flavours; the other
    arguments are those of `BaseDecodeHead`.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        *,
        num_classes: int,
        interpolate_mode: str = "bilinear",
        projection: str = "conv",
        in_index: Sequence[int] | None = None,
        out_channels: int | None = None,
        threshold: float | None = None,
        dropout_ratio: float = 0.1,
        conv_cfg: dict[str, Any] | None = None,
        norm_cfg: dict[str, Any] | None = _BN,
        act_cfg: dict[str, Any] | None = _RELU,
        loss_decode: dict[str, Any] | Sequence[dict[str, Any]] = _DEFAULT_LOSS,
        ignore_index: int = 255,
        sampler: dict[str, Any] | None = None,
        align_corners: bool = False,
    ) -> None:
        if projection not in _PROJECTIONS:
            raise ValueError(f"SegformerHead: projection must be one of {_PROJECTIONS}, got {projection!r}")
        if not isinstance(in_channels, (list, tuple)):
            raise ValueError(
                f"SegformerHead: in_channels must list the channels of each stage, got {in_channels!r}"
            )
        if in_index is None:
            in_index = list(range(len(in_channels)))
        super().__init__(
            list(in_channels),
            channels,
            num_classes=num_classes,
            out_channels=out_channels,
            threshold=threshold,
            dropout_ratio=dropout_ratio,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            in_index=in_index,
            input_transform="multiple_select",
            loss_decode=loss_decode,
            ignore_index=ignore_index,
            sampler=sampler,
            align_corners=align_corners,
        )
        self.interpolate_mode = interpolate_mode
        self.projection = projection
        num_inputs = len(self.in_channels)
        if projection == "conv":
            self.convs = nn.ModuleList(
                ConvModule(c, channels, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
                for c in self.in_channels
            )
            # as in MMSegmentation: the fusion conv always uses ConvModule's default ReLU
            self.fusion_conv = ConvModule(
                channels * num_inputs, channels, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg
            )
        else:
            if norm_cfg is None:
                raise ValueError('SegformerHead: projection="linear" needs a norm_cfg (BN in transformers)')
            self.linear_c = nn.ModuleList(SegformerMLP(c, channels) for c in self.in_channels)
            self.linear_fuse = nn.Conv2d(channels * num_inputs, channels, kernel_size=1, bias=False)
            self.batch_norm = build_norm(norm_cfg, channels)
            self.activation = build_activation(act_cfg) if act_cfg is not None else nn.Identity()
            self.dropout = nn.Dropout(dropout_ratio) if dropout_ratio > 0 else None  # transformers: not 2d
            for module in (*self.linear_c.modules(), self.linear_fuse):  # transformers' init
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    nn.init.normal_(module.weight, mean=0.0, std=0.02)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stage features `[(N, C_i, h_i, w_i)]` → logits `(N, out_channels, h_0, w_0)`.

        Computed in a cheaper but equal order: the fusion 1x1 conv over the concatenated, upsampled
        stages equals the sum over stages of its slice of weights applied to each stage *before* the
        bilinear upsampling (both are linear; upsampling mixes pixels, the 1x1 conv mixes channels),
        so no `(N, 4 * channels, h_0, w_0)` tensor is made and most of the fusion runs at low
        resolution. For `projection="linear"` the stage Linear and the fusion slice compose into one
        `(channels, C_i)` matrix. Same parameters, same state dict, same results up to rounding.
        """
        feats = self._transform_inputs(inputs)
        size = feats[0].shape[2:]
        if self.projection == "conv":
            fuse = self.fusion_conv
            slices = fuse.conv.weight.flatten(1).split(self.channels, dim=1)  # stage order
            stages = [F.conv2d(conv(x), w[:, :, None, None]) for x, conv, w in zip(feats, self.convs, slices)]
            bias = fuse.conv.bias
        else:
            slices = self.linear_fuse.weight.flatten(1).split(self.channels, dim=1)[::-1]  # reversed cat
            stages = [
                F.conv2d(x, (w @ mlp.proj.weight)[:, :, None, None], w @ mlp.proj.bias)
                for x, mlp, w in zip(feats, self.linear_c, slices)
            ]
            bias = self.linear_fuse.bias
        out = None
        for y in stages:
            y = resize(y, size=size, mode=self.interpolate_mode, align_corners=self.align_corners)
            out = y if out is None else out + y
        if bias is not None:
            out = out + bias[:, None, None]
        if self.projection == "conv":
            if fuse.norm_name is not None:
                out = fuse.norm(out)
            if fuse.with_activation:
                out = fuse.activate(out)
        else:
            out = self.activation(self.batch_norm(out))
        return self.cls_seg(out)
