"""mmpretrain's ConvNeXt backbone (`ConvNeXt`, MMSegmentation's `mmpretrain.ConvNeXt`), with its names.

A ConvNet for the 2020s (https://arxiv.org/abs/2201.03545). Module names (mmpretrain's state dict):

    downsample_layers.0.{0,1}          stem: 4x4 conv (stride 4), LayerNorm over channels
    downsample_layers.{i}.{0,1}        LayerNorm, 2x2 conv (stride 2), before stage i >= 1
    stages.{i}.{j}.depthwise_conv / .norm / .pointwise_conv1 / .pointwise_conv2 / .gamma
    norm{i}                            a LayerNorm on each returned stage (segmentation)

`arch` is a name (`tiny`, `small`, `base`, `large`, `xlarge`, ...) or `{depths: [...], channels:
[...]}`. MMSegmentation's UPerNet configs use `gap_before_final_norm=False` (per-stage maps, normed)
and `layer_scale_init_value=1.0`. `pretrained` takes timm's (`timm/convnext_tiny.fb_in1k`) or
mmpretrain's weights (see `segaccel.models.backbones.pretrained`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

from segaccel.convert.backbones import convnext_state_dict_from_timm

from ..utils import build_activation
from .mit import DropPath
from .pretrained import load_backbone_pretrained

ARCH_SETTINGS: dict[str, dict[str, list[int]]] = {
    "atto": {"depths": [2, 2, 6, 2], "channels": [40, 80, 160, 320]},
    "femto": {"depths": [2, 2, 6, 2], "channels": [48, 96, 192, 384]},
    "pico": {"depths": [2, 2, 6, 2], "channels": [64, 128, 256, 512]},
    "nano": {"depths": [2, 2, 8, 2], "channels": [80, 160, 320, 640]},
    "tiny": {"depths": [3, 3, 9, 3], "channels": [96, 192, 384, 768]},
    "small": {"depths": [3, 3, 27, 3], "channels": [96, 192, 384, 768]},
    "base": {"depths": [3, 3, 27, 3], "channels": [128, 256, 512, 1024]},
    "large": {"depths": [3, 3, 27, 3], "channels": [192, 384, 768, 1536]},
    "xlarge": {"depths": [3, 3, 27, 3], "channels": [256, 512, 1024, 2048]},
    "huge": {"depths": [3, 3, 27, 3], "channels": [352, 704, 1408, 2816]},
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of `(N, C, H, W)` maps (mmpretrain's `LN2d`)."""

    def forward(self, x: torch.Tensor, channel_last: bool = False) -> torch.Tensor:
        if channel_last:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2).contiguous()


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise conv → LayerNorm → Linear (4x) → GELU → Linear → layer scale → residual."""

    def __init__(
        self,
        channels: int,
        eps: float,
        act_cfg: dict[str, Any],
        mlp_ratio: float,
        drop_path_rate: float,
        layer_scale_init_value: float,
        with_cp: bool,
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.depthwise_conv = nn.Conv2d(channels, channels, kernel_size=7, padding=3, groups=channels)
        self.norm = LayerNorm2d(channels, eps=eps)
        hidden = int(mlp_ratio * channels)
        self.pointwise_conv1 = nn.Linear(channels, hidden)
        self.act = build_activation(act_cfg)
        self.pointwise_conv2 = nn.Linear(hidden, channels)
        scale = layer_scale_init_value
        self.gamma = nn.Parameter(scale * torch.ones(channels)) if scale > 0 else None
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def inner(x: torch.Tensor) -> torch.Tensor:
            shortcut = x
            x = self.depthwise_conv(x).permute(0, 2, 3, 1)  # (N, H, W, C)
            x = self.pointwise_conv2(self.act(self.pointwise_conv1(self.norm(x, channel_last=True))))
            x = x.permute(0, 3, 1, 2)
            if self.gamma is not None:
                x = x.mul(self.gamma.view(1, -1, 1, 1))
            return shortcut + self.drop_path(x)

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(inner, x, use_reentrant=False)
        return inner(x)


class ConvNeXt(nn.Module):
    """mmpretrain's ConvNeXt (v1): `(N, C_in, H, W)` → `[(N, C_i, H/4/2^i, W/4/2^i) for i in out_indices]`.

    Args: as mmpretrain's `ConvNeXt`: `arch`, `in_channels`, `stem_patch_size`, `norm_cfg`
    (`{type: LN2d, eps: 1e-6}`), `act_cfg`, `mlp_ratio`, `drop_path_rate` (linear over all blocks),
    `layer_scale_init_value`, `out_indices`, `frozen_stages` (the first `frozen_stages` stages and
    their downsampling layers frozen), `gap_before_final_norm` (True: each output is the normed
    global average `(N, C_i)`, for classification; segmentation uses False), `with_cp`;
    `pretrained`: see the module docstring. `linear_pw_conv=False` and `use_grn` (ConvNeXt V2) are not
    supported.
    """

    # The blocks FSDP shards as one unit each (Accelerate's TRANSFORMER_BASED_WRAP reads this).
    _no_split_modules = ["ConvNeXtBlock"]

    def __init__(
        self,
        arch: str | dict[str, Sequence[int]] = "tiny",
        in_channels: int = 3,
        stem_patch_size: int = 4,
        norm_cfg: dict[str, Any] | None = None,
        act_cfg: dict[str, Any] | None = None,
        mlp_ratio: float = 4.0,
        linear_pw_conv: bool = True,
        use_grn: bool = False,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        out_indices: int | Sequence[int] = -1,
        frozen_stages: int = 0,
        gap_before_final_norm: bool = True,
        with_cp: bool = False,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(arch, str):
            if arch not in ARCH_SETTINGS:
                raise ValueError(f"ConvNeXt: arch {arch!r} is not one of {', '.join(ARCH_SETTINGS)}")
            arch = ARCH_SETTINGS[arch]
        if not isinstance(arch, dict) or "depths" not in arch or "channels" not in arch:
            raise ValueError(f"ConvNeXt: arch must be a name or {{depths: [...], channels: [...]}}: {arch!r}")
        depths, channels = list(arch["depths"]), list(arch["channels"])
        if len(depths) != len(channels):
            raise ValueError(f"ConvNeXt: arch depths {depths} and channels {channels} differ in length")
        if not linear_pw_conv or use_grn:
            raise ValueError("ConvNeXt: only linear_pw_conv=True and use_grn=False (ConvNeXt v1) are built")
        norm_cfg = dict(norm_cfg or {"type": "LN2d", "eps": 1e-6})
        if norm_cfg.get("type") not in ("LN2d", "LN") or set(norm_cfg) - {"type", "eps", "requires_grad"}:
            raise ValueError(f"ConvNeXt: norm_cfg must be {{type: LN2d, eps: ...}}, got {norm_cfg}")
        eps = float(norm_cfg.get("eps", 1e-5))
        act_cfg = dict(act_cfg or {"type": "GELU"})
        num_stages = len(depths)
        indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        indices = [i + num_stages if i < 0 else i for i in indices]
        if not indices or not all(0 <= i < num_stages for i in indices):
            raise ValueError(f"ConvNeXt: out_indices {out_indices!r} out of range for {num_stages} stages")
        self.depths, self.channels = depths, channels
        self.out_indices = tuple(indices)
        self.frozen_stages = frozen_stages
        self.gap_before_final_norm = gap_before_final_norm
        self.pretrained = pretrained

        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.downsample_layers = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(in_channels, channels[0], kernel_size=stem_patch_size, stride=stem_patch_size),
                    LayerNorm2d(channels[0], eps=eps),
                )
            ]
        )
        self.stages = nn.ModuleList()
        start = 0
        for i, depth in enumerate(depths):
            if i >= 1:
                self.downsample_layers.append(
                    nn.Sequential(
                        LayerNorm2d(channels[i - 1], eps=eps),
                        nn.Conv2d(channels[i - 1], channels[i], kernel_size=2, stride=2),
                    )
                )
            blocks = [
                ConvNeXtBlock(
                    channels[i], eps, act_cfg, mlp_ratio, dpr[start + j], layer_scale_init_value, with_cp
                )
                for j in range(depth)
            ]
            self.stages.append(nn.Sequential(*blocks))
            start += depth
            if i in self.out_indices:
                self.add_module(f"norm{i}", LayerNorm2d(channels[i], eps=eps))
        self.out_channels = tuple(channels[i] for i in self.out_indices)

        self.init_weights()
        if pretrained:
            load_backbone_pretrained(self, pretrained, convnext_state_dict_from_timm)
        if not norm_cfg.get("requires_grad", True):
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.requires_grad_(False)
        self._freeze_stages()

    def init_weights(self) -> None:
        """mmpretrain's init: trunc-normal(0.02) convs and Linears with zero bias, LayerNorm 1/0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _freeze_stages(self) -> None:
        for i in range(self.frozen_stages):
            for module in (self.downsample_layers[i], self.stages[i]):
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> ConvNeXt:
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """`(N, C_in, H, W)` → one normed map `(N, C_i, h_i, w_i)` (or `(N, C_i)`) per `out_indices`."""
        outs = []
        for i, stage in enumerate(self.stages[: max(self.out_indices) + 1]):
            x = stage(self.downsample_layers[i](x))
            if i in self.out_indices:
                norm = getattr(self, f"norm{i}")
                if self.gap_before_final_norm:
                    outs.append(norm(x.mean([-2, -1], keepdim=True)).flatten(1))
                else:
                    outs.append(norm(x))
        return outs
