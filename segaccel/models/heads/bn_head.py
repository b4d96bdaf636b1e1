"""`BNHead`: the linear head of DINOv2 and DINOv3 segmentation — resize, concatenate, BatchNorm, 1x1 conv.

DINOv2's `linear` head is the last block's patch features (`in_index: [3]` of four outputs); its
multi-scale (`ms`) head concatenates the last four blocks (`in_index: [0, 1, 2, 3]`,
`in_channels: [C, C, C, C]`, `channels: 4C`). With `TimmBackbone(with_cls_token=True)` every level
already carries `[patch, cls]`. Weights: `bn`, `conv_seg` (DINOv2's `decode_head.bn.*`,
`decode_head.conv_seg.*`). `dropout_before_norm` puts the dropout before the BatchNorm, as DINOv3's
`LinearHead` does (DINOv2 and MMSegmentation drop out right before `conv_seg`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from segaccel.models.heads.decode_head import BaseDecodeHead
from segaccel.models.utils import build_norm, resize


class BNHead(BaseDecodeHead):
    """Features → (resize to the first selected level, concatenate) → BatchNorm → `conv_seg`.

    Args:
        resize_factors: per selected level, a scale applied before the common resize (bilinear up,
            area down), as DINOv2's `BNHead`.
        dropout_before_norm: DINOv3's order (dropout → norm → 1x1 conv).
        norm_cfg: the norm over the concatenated features (default BN; SyncBN in DINOv2's configs).
        **kwargs: `BaseDecodeHead` arguments; `channels` must equal the (concatenated) input channels.
    """

    def __init__(
        self,
        resize_factors: Sequence[float] | None = None,
        dropout_before_norm: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        in_channels = self.in_channels if isinstance(self.in_channels, int) else sum(self.in_channels)
        if in_channels != self.channels:
            raise ValueError(
                f"BNHead: channels ({self.channels}) must equal the input channels ({in_channels}): the head "
                "is a norm and a 1x1 conv, nothing in between"
            )
        if resize_factors is not None:
            selected = len(self.in_index) if isinstance(self.in_index, list) else 1
            if len(resize_factors) != selected:
                raise ValueError(f"BNHead: {len(resize_factors)} resize_factors for {selected} inputs")
        self.resize_factors = None if resize_factors is None else [float(f) for f in resize_factors]
        self.dropout_before_norm = dropout_before_norm
        self.bn = build_norm(self.norm_cfg or {"type": "BN"}, self.channels)

    def _transform_inputs(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        if self.resize_factors is None or self.input_transform != "resize_concat":
            return super()._transform_inputs(inputs)
        selected = [
            resize(inputs[i], scale_factor=f, mode="bilinear" if f >= 1 else "area")
            for i, f in zip(self.in_index, self.resize_factors)
        ]
        size = selected[0].shape[2:]
        return torch.cat(
            [resize(x, size=size, mode="bilinear", align_corners=self.align_corners) for x in selected], dim=1
        )

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Features → logits `(N, out_channels, h, w)` at the first selected level's size."""
        x = self._transform_inputs(inputs)
        if self.dropout_before_norm:
            if self.dropout is not None:
                x = self.dropout(x)
            return self.conv_seg(self.bn(x))
        return self.cls_seg(self.bn(x))
