"""Mask2Former's pixel decoder (mmdet's `MSDeformAttnPixelDecoder`).

The lowest-resolution `num_levels` backbone maps (1/8, 1/16, 1/32) are projected to `feat_channels`,
flattened together and refined by a stack of multi-scale deformable self-attention layers; the
remaining higher-resolution maps (1/4) join through an FPN (lateral 1x1 conv + the upsampled coarser
output, then a 3x3 conv). Outputs: the per-pixel mask features `(N, out_channels, H/4, W/4)` and the
`num_outs` lowest-resolution maps the transformer decoder attends to, lowest resolution first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segaccel.models.heads.mask2former.layers import FFN
from segaccel.models.heads.mask2former.ms_deform_attn import MultiScaleDeformableAttention
from segaccel.models.heads.mask2former.positional_encoding import SinePositionalEncoding
from segaccel.models.utils import ConvModule

_GN = {"type": "GN", "num_groups": 32}  # shared defaults; never mutated
_RELU = {"type": "ReLU"}
_SINE = {"num_feats": 128, "normalize": True}
_ENCODER = {
    "num_layers": 6,
    "layer_cfg": {
        "self_attn_cfg": {"embed_dims": 256, "num_heads": 8, "num_levels": 3, "num_points": 4},
        "ffn_cfg": {"embed_dims": 256, "feedforward_channels": 1024, "num_fcs": 2, "ffn_drop": 0.0},
    },
}
_IGNORED_ATTN_KEYS = ("im2col_step", "batch_first", "norm_cfg", "init_cfg")  # mmcv kernel/layout details


def _attn_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """mmcv's `self_attn_cfg` without the keys that only steer its CUDA kernel or layout."""
    cfg = dict(cfg)
    if not cfg.pop("batch_first", True):
        raise ValueError("pixel_decoder.encoder.layer_cfg.self_attn_cfg: only batch_first=True is supported")
    for key in ("norm_cfg", "init_cfg"):
        if cfg.pop(key, None) is not None:
            raise ValueError(f"pixel_decoder.encoder.layer_cfg.self_attn_cfg.{key} must be None")
    cfg.pop("im2col_step", None)
    return cfg


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention → LayerNorm → FFN → LayerNorm (post-norm), mmdet's names."""

    def __init__(
        self, self_attn_cfg: dict[str, Any], ffn_cfg: dict[str, Any], norm_cfg: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        if norm_cfg is not None and norm_cfg.get("type") != "LN":
            raise ValueError(f"pixel_decoder.encoder.layer_cfg.norm_cfg: only LN, got {norm_cfg!r}")
        self.self_attn = MultiScaleDeformableAttention(**_attn_kwargs(self_attn_cfg))
        self.ffn = FFN(**ffn_cfg)
        dims = self.self_attn.embed_dims
        self.norms = nn.ModuleList([nn.LayerNorm(dims), nn.LayerNorm(dims)])

    def forward(
        self, query: torch.Tensor, query_pos: torch.Tensor, reference_points: torch.Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> torch.Tensor:
        """`(N, S, C)` → `(N, S, C)`."""
        query = self.self_attn(query, query, query_pos, reference_points, spatial_shapes)
        query = self.norms[0](query)
        return self.norms[1](self.ffn(query))


class DeformableEncoder(nn.Module):
    """`num_layers` `DeformableEncoderLayer`s (mmdet's `Mask2FormerTransformerEncoder`)."""

    def __init__(self, num_layers: int = 6, layer_cfg: dict[str, Any] | None = None, init_cfg: None = None):
        super().__init__()
        layer_cfg = layer_cfg or _ENCODER["layer_cfg"]
        self.layers = nn.ModuleList(DeformableEncoderLayer(**layer_cfg) for _ in range(num_layers))

    def forward(
        self, query: torch.Tensor, query_pos: torch.Tensor, reference_points: torch.Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> torch.Tensor:
        for layer in self.layers:
            query = layer(query, query_pos, reference_points, spatial_shapes)
        return query


def reference_points(
    spatial_shapes: Sequence[tuple[int, int]], n: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Pixel centres of every level in `[0, 1]`, `(n, sum(h*w), levels, 2)` as `(x, y)`."""
    points = []
    for h, w in spatial_shapes:
        # linspace(0.5, h - 0.5, h) exactly (whole steps), written so a traced h stays a symbol
        ys, xs = torch.meshgrid(
            (torch.arange(h, device=device, dtype=dtype) + 0.5) / h,
            (torch.arange(w, device=device, dtype=dtype) + 0.5) / w,
            indexing="ij",
        )
        points.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), -1))
    ref = torch.cat(points, 0)
    return ref[None, :, None, :].expand(n, -1, len(spatial_shapes), -1)


class MSDeformAttnPixelDecoder(nn.Module):
    """Pixel decoder with multi-scale deformable attention (mmdet's `MSDeformAttnPixelDecoder`).

    Args:
        in_channels: channels of the backbone maps, highest resolution first.
        strides: their strides (e.g. `(4, 8, 16, 32)`).
        feat_channels: channels inside the decoder.
        out_channels: channels of the mask features.
        num_outs: multi-scale maps returned for the transformer decoder.
        norm_cfg, act_cfg: of the convolutions (GroupNorm with 32 groups, ReLU).
        encoder: `{num_layers, layer_cfg: {self_attn_cfg, ffn_cfg}}` (mmdet's layout);
            `self_attn_cfg.num_levels` maps go through the deformable encoder.
        positional_encoding: `SinePositionalEncoding` arguments.
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (256, 512, 1024, 2048),
        strides: Sequence[int] = (4, 8, 16, 32),
        feat_channels: int = 256,
        out_channels: int = 256,
        num_outs: int = 3,
        norm_cfg: dict[str, Any] = _GN,
        act_cfg: dict[str, Any] = _RELU,
        encoder: dict[str, Any] = _ENCODER,
        positional_encoding: dict[str, Any] = _SINE,
        init_cfg: None = None,
    ) -> None:
        super().__init__()
        self.strides = list(strides)
        self.num_input_levels = len(in_channels)
        self.num_encoder_levels = int(encoder["layer_cfg"]["self_attn_cfg"].get("num_levels", 4))
        if not 1 <= self.num_encoder_levels <= self.num_input_levels:
            raise ValueError(
                f"pixel_decoder: num_levels {self.num_encoder_levels} must be 1..{self.num_input_levels} "
                "(the number of in_channels)"
            )
        # the encoder's levels, lowest resolution first
        self.input_convs = nn.ModuleList(
            ConvModule(in_channels[i], feat_channels, 1, bias=True, norm_cfg=dict(norm_cfg), act_cfg=None)
            for i in range(self.num_input_levels - 1, self.num_input_levels - self.num_encoder_levels - 1, -1)
        )
        self.encoder = DeformableEncoder(**encoder)
        self.postional_encoding = SinePositionalEncoding(**positional_encoding)  # mmdet's spelling
        self.level_encoding = nn.Embedding(self.num_encoder_levels, feat_channels)
        # the FPN levels, indexed by their backbone level (highest resolution = 0)
        num_fpn = self.num_input_levels - self.num_encoder_levels
        self.lateral_convs = nn.ModuleList(
            ConvModule(in_channels[i], feat_channels, 1, bias=False, norm_cfg=dict(norm_cfg), act_cfg=None)
            for i in range(num_fpn)
        )
        self.output_convs = nn.ModuleList(
            ConvModule(
                feat_channels, feat_channels, 3, padding=1, bias=False, norm_cfg=dict(norm_cfg),
                act_cfg=dict(act_cfg),
            )
            for _ in range(num_fpn)
        )
        self.mask_feature = nn.Conv2d(feat_channels, out_channels, kernel_size=1)
        self.num_outs = num_outs
        self.init_weights()

    def init_weights(self) -> None:
        """mmdet's init: Xavier for the convs, N(0, 1) level encodings, Xavier-normal encoder weights."""
        for conv in self.input_convs:
            nn.init.xavier_uniform_(conv.conv.weight)
            nn.init.zeros_(conv.conv.bias)
        for module in (*self.lateral_convs, *self.output_convs):
            nn.init.kaiming_uniform_(module.conv.weight, a=1)  # caffe2_xavier_init
        nn.init.kaiming_uniform_(self.mask_feature.weight, a=1)
        nn.init.zeros_(self.mask_feature.bias)
        nn.init.normal_(self.level_encoding.weight)
        for p in self.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        for layer in self.encoder.layers:
            layer.self_attn.init_weights()

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Backbone maps (highest resolution first) → mask features, multi-scale maps (lowest first)."""
        if len(feats) != self.num_input_levels:
            raise ValueError(f"pixel decoder: expected {self.num_input_levels} maps, got {len(feats)}")
        n = feats[0].shape[0]
        inputs, positions, shapes = [], [], []
        for i in range(self.num_encoder_levels):
            feat = feats[self.num_input_levels - i - 1]
            h, w = feat.shape[-2:]
            projected = self.input_convs[i](feat)
            pos = self.postional_encoding(n, h, w, feat.device, projected.dtype)
            pos = pos + self.level_encoding.weight[i].view(1, -1, 1, 1).to(projected.dtype)
            inputs.append(projected.flatten(2).transpose(1, 2))
            positions.append(pos.flatten(2).transpose(1, 2))
            shapes.append((h, w))  # ints, or symbols under torch.export (never int(): it pins them)
        query = torch.cat(inputs, 1)
        ref = reference_points(shapes, n, query.device, query.dtype)
        memory = self.encoder(query, torch.cat(positions, 1), ref, shapes)
        outs = [
            x.transpose(1, 2).reshape(n, -1, h, w)
            for x, (h, w) in zip(memory.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        for i in range(self.num_input_levels - self.num_encoder_levels - 1, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            coarser = F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(self.output_convs[i](lateral + coarser))
        return self.mask_feature(outs[-1]), outs[: self.num_outs]
