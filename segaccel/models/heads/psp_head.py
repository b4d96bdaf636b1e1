"""PSPNet head (Zhao et al., 2017) as MMSegmentation's `PSPHead`: pyramid pooling, then a 3x3 bottleneck.

Weights: `psp_modules.{i}.1.conv/bn` (pool scale i), `bottleneck.conv/bn`, `conv_seg`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segaccel.models.heads.decode_head import BaseDecodeHead
from segaccel.models.utils import ConvModule, is_exporting, resize


def _pool_weights(size: int | torch.SymInt, out: int, like: torch.Tensor) -> torch.Tensor:
    """`(out, size)` matrix: row i is 1/count over adaptive pooling's window i, `[floor(i*size/out),
    ceil((i+1)*size/out))`, and 0 elsewhere."""
    i = torch.arange(out, device=like.device)
    start = (i * size) // out
    end = ((i + 1) * size + out - 1) // out
    j = torch.arange(size, device=like.device)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def adaptive_avg_pool2d(x: torch.Tensor, output_size: int | Sequence[int]) -> torch.Tensor:
    """`F.adaptive_avg_pool2d` of `(N, C, H, W)` as two matrix products over the same windows.

    Equal up to float rounding, but built from shape arithmetic only, so it exports with a symbolic
    height and width (ONNX has no adaptive pooling, and its exporters pin the input size otherwise).
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    h, w = x.shape[-2:]
    return _pool_weights(h, out_h, x) @ x @ _pool_weights(w, out_w, x).transpose(0, 1)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """`nn.AdaptiveAvgPool2d` (eager: the native kernel) that traces as `adaptive_avg_pool2d` under
    `torch.export`, so exported PSP/UPerNet graphs take any input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.output_size
        if is_exporting() and (isinstance(size, int) or None not in size):
            return adaptive_avg_pool2d(x, size)
        return super().forward(x)


class PPM(nn.ModuleList):
    """Pooling pyramid: per scale, adaptive average pool → 1x1 ConvModule, upsampled back to the input size.

    `forward(x (N, C, H, W))` → a list of `(N, channels, H, W)` maps, one per pool scale.
    """

    def __init__(
        self,
        pool_scales: Sequence[int],
        in_channels: int,
        channels: int,
        conv_cfg: dict[str, Any] | None,
        norm_cfg: dict[str, Any] | None,
        act_cfg: dict[str, Any] | None,
        align_corners: bool,
    ) -> None:
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.align_corners = align_corners
        for scale in self.pool_scales:
            self.append(
                nn.Sequential(
                    AdaptiveAvgPool2d(scale),
                    ConvModule(
                        in_channels, channels, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg
                    ),
                )
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = x.shape[2:]
        return [resize(ppm(x), size=size, mode="bilinear", align_corners=self.align_corners) for ppm in self]


class PSPHead(BaseDecodeHead):
    """Pyramid pooling over one feature map: `[x, PPM(x)...]` concatenated → 3x3 bottleneck → classifier.

    Args:
        pool_scales: output sizes of the adaptive pools.
        **kwargs: `BaseDecodeHead` arguments.
    """

    def __init__(self, pool_scales: Sequence[int] = (1, 2, 3, 6), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(pool_scales, (list, tuple)) or not pool_scales:
            raise ValueError(f"PSPHead: pool_scales must be a non-empty list of ints, got {pool_scales!r}")
        self.pool_scales = tuple(pool_scales)
        self.psp_modules = PPM(
            self.pool_scales,
            self.in_channels,
            self.channels,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg,
            align_corners=self.align_corners,
        )
        self.bottleneck = ConvModule(
            self.in_channels + len(self.pool_scales) * self.channels,
            self.channels,
            3,
            padding=1,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg,
        )

    def _forward_feature(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = self._transform_inputs(inputs)
        return self.bottleneck(torch.cat([x, *self.psp_modules(x)], dim=1))

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Features → logits `(N, out_channels, h, w)` at the selected input's size."""
        return self.cls_seg(self._forward_feature(inputs))
