"""`Mask2FormerHead`: Mask2Former (Cheng et al., CVPR 2022) as a decode head, MMSegmentation's name.

backbone maps → `MSDeformAttnPixelDecoder` (mask features at 1/4 and three maps at 1/8, 1/16, 1/32)
→ `num_queries` learned queries through a masked-attention transformer decoder that visits the three
maps round-robin, lowest resolution first → after the initial queries and after every layer, class
scores `(N, Q, C + 1)` from `cls_embed` and mask logits `(N, Q, H/4, W/4)` from `mask_embed` · mask
features. Every prediction is supervised (deep supervision); the next layer's cross-attention is
masked to where the current prediction's mask is on. Training and inference: `MaskClassificationHead`.

The arguments and module names are MMSegmentation's (mmdet's `Mask2FormerHead` and
`MSDeformAttnPixelDecoder`), so its configs read the same; the losses are one
`MaskClassificationLoss` config (`loss_decode`) instead of mmdet's `loss_cls`/`loss_mask`/`loss_dice`
and `train_cfg.assigner`, with the same defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segaccel.models.heads.mask2former.pixel_decoder import MSDeformAttnPixelDecoder
from segaccel.models.heads.mask2former.positional_encoding import SinePositionalEncoding
from segaccel.models.heads.mask2former.transformer_decoder import MaskedAttentionDecoder
from segaccel.models.heads.mask_classification import DEFAULT_LOSS, MaskClassificationHead

# MMSegmentation's Mask2Former defaults (shared, never mutated)
_PIXEL_DECODER = {
    "num_outs": 3,
    "norm_cfg": {"type": "GN", "num_groups": 32},
    "act_cfg": {"type": "ReLU"},
    "encoder": {
        "num_layers": 6,
        "layer_cfg": {
            "self_attn_cfg": {"embed_dims": 256, "num_heads": 8, "num_levels": 3, "num_points": 4},
            "ffn_cfg": {"embed_dims": 256, "feedforward_channels": 1024, "num_fcs": 2, "ffn_drop": 0.0},
        },
    },
    "positional_encoding": {"num_feats": 128, "normalize": True},
}
_ATTN = {"embed_dims": 256, "num_heads": 8, "attn_drop": 0.0, "proj_drop": 0.0}
_TRANSFORMER_DECODER = {
    "return_intermediate": True,
    "num_layers": 9,
    "layer_cfg": {
        "self_attn_cfg": _ATTN,
        "cross_attn_cfg": _ATTN,
        "ffn_cfg": {"embed_dims": 256, "feedforward_channels": 2048, "num_fcs": 2, "ffn_drop": 0.0},
    },
}
_SINE = {"num_feats": 128, "normalize": True}


class Mask2FormerHead(MaskClassificationHead):
    """Mask2Former's pixel decoder, transformer decoder and predictions.

    Args:
        in_channels: channels of the backbone maps, highest resolution first.
        strides: their strides.
        feat_channels: channels of the pixel decoder (the queries and the decoder have
            `transformer_decoder`'s `embed_dims`, the same in MMSegmentation's configs).
        out_channels: channels of the mask features and mask embeddings (MMSegmentation's name; the
            head's `out_channels` attribute is then `num_classes`, as there).
        num_classes: classes (without "no object").
        num_queries: learned queries.
        num_transformer_feat_level: pixel-decoder maps the decoder attends to, round-robin.
        pixel_decoder: `MSDeformAttnPixelDecoder` arguments (mmdet's layout; `in_channels`, `strides`,
            `feat_channels`, `out_channels` come from the head).
        enforce_decoder_input_project: a 1x1 conv before the decoder even when the channels agree.
        positional_encoding: the decoder's `SinePositionalEncoding` arguments.
        transformer_decoder: `{num_layers, layer_cfg: {self_attn_cfg, cross_attn_cfg, ffn_cfg}}`.
        loss_decode: the `MaskClassificationLoss` config.
        in_index: which backbone maps to use (default: all, in order).
        ignore_index, align_corners: see `MaskClassificationHead`.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int] = (4, 8, 16, 32),
        feat_channels: int = 256,
        out_channels: int = 256,
        *,
        num_classes: int,
        num_queries: int = 100,
        num_transformer_feat_level: int = 3,
        pixel_decoder: dict[str, Any] = _PIXEL_DECODER,
        enforce_decoder_input_project: bool = False,
        positional_encoding: dict[str, Any] = _SINE,
        transformer_decoder: dict[str, Any] = _TRANSFORMER_DECODER,
        loss_decode: dict[str, Any] = DEFAULT_LOSS,
        in_index: Sequence[int] | None = None,
        ignore_index: int = 255,
        align_corners: bool = False,
        init_cfg: None = None,
    ) -> None:
        super().__init__(
            num_classes, loss_decode=loss_decode, ignore_index=ignore_index, align_corners=align_corners
        )
        in_channels = list(in_channels)
        if len(strides) != len(in_channels):
            raise ValueError(f"strides {list(strides)} and in_channels {in_channels} differ in length")
        if in_index is not None and len(in_index) != len(in_channels):
            raise ValueError(f"in_index {list(in_index)} and in_channels {in_channels} differ in length")
        self.in_channels = in_channels
        self.in_index = None if in_index is None else list(in_index)
        self.mask_channels = out_channels
        self.num_queries = num_queries
        self.num_transformer_feat_level = num_transformer_feat_level
        levels = pixel_decoder["encoder"]["layer_cfg"]["self_attn_cfg"].get("num_levels")
        if levels != num_transformer_feat_level:
            raise ValueError(
                f"pixel_decoder.encoder.layer_cfg.self_attn_cfg.num_levels ({levels}) must equal "
                f"num_transformer_feat_level ({num_transformer_feat_level})"
            )
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            in_channels=in_channels, strides=strides, feat_channels=feat_channels, out_channels=out_channels,
            **pixel_decoder,
        )
        self.transformer_decoder = MaskedAttentionDecoder(**transformer_decoder)
        dims = self.transformer_decoder.embed_dims
        self.num_heads = self.transformer_decoder.num_heads
        self.decoder_input_projs = nn.ModuleList(
            nn.Conv2d(feat_channels, dims, kernel_size=1)
            if dims != feat_channels or enforce_decoder_input_project
            else nn.Identity()
            for _ in range(num_transformer_feat_level)
        )
        self.decoder_positional_encoding = SinePositionalEncoding(**positional_encoding)
        # queries and predictions live in the decoder's width (mmdet's feat_channels: the same by default)
        self.query_embed = nn.Embedding(num_queries, dims)
        self.query_feat = nn.Embedding(num_queries, dims)
        self.level_embed = nn.Embedding(num_transformer_feat_level, dims)
        self.cls_embed = nn.Linear(dims, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(dims, dims), nn.ReLU(inplace=True),
            nn.Linear(dims, dims), nn.ReLU(inplace=True),
            nn.Linear(dims, out_channels),
        )
        self.init_weights()

    def init_weights(self) -> None:
        """mmdet's init: Xavier for the input projections and every decoder matrix."""
        for proj in self.decoder_input_projs:
            if isinstance(proj, nn.Conv2d):
                nn.init.kaiming_uniform_(proj.weight, a=1)
                nn.init.zeros_(proj.bias)
        for p in self.transformer_decoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)

    def _forward_head(
        self, decoder_out: torch.Tensor, mask_features: torch.Tensor, attn_mask_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class scores `(N, Q, C + 1)`, mask logits `(N, Q, h, w)` and the next cross-attention mask
        `(N * heads, Q, h_l * w_l)` (True where the mask, resized to the next level, is off)."""
        decoder_out = self.transformer_decoder.post_norm(decoder_out)
        cls_scores = self.cls_embed(decoder_out)
        mask_preds = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoder_out), mask_features)
        attn_mask = F.interpolate(mask_preds, size=attn_mask_size, mode="bilinear", align_corners=False)
        attn_mask = attn_mask.flatten(2).unsqueeze(1).expand(-1, self.num_heads, -1, -1).flatten(0, 1)
        return cls_scores, mask_preds, (attn_mask.sigmoid() < 0.5).detach()

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Backbone maps → per prediction (initial + each layer): class scores and mask logits."""
        feats = list(inputs) if self.in_index is None else [inputs[i] for i in self.in_index]
        mask_features, multi_scale = self.pixel_decoder(feats)
        n = mask_features.shape[0]
        keys, key_pos, sizes = [], [], []
        for i in range(self.num_transformer_feat_level):
            x = self.decoder_input_projs[i](multi_scale[i])
            h, w = x.shape[-2:]
            keys.append(x.flatten(2).transpose(1, 2) + self.level_embed.weight[i].to(x.dtype))
            pos = self.decoder_positional_encoding(n, h, w, x.device, x.dtype)
            key_pos.append(pos.flatten(2).transpose(1, 2))
            sizes.append((h, w))  # no int(): torch.export keeps traced sizes symbolic
        query = self.query_feat.weight.unsqueeze(0).repeat(n, 1, 1)  # (repeat: no view of a parameter)
        query_pos = self.query_embed.weight.unsqueeze(0).repeat(n, 1, 1)
        cls_scores, mask_preds, attn_mask = self._forward_head(query, mask_features, sizes[0])
        all_cls_scores, all_mask_preds = [cls_scores], [mask_preds]
        for i, layer in enumerate(self.transformer_decoder.layers):
            level = i % self.num_transformer_feat_level
            # a query whose mask is off everywhere attends everywhere
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
            query = layer(query, keys[level], query_pos, key_pos[level], attn_mask)
            next_size = sizes[(i + 1) % self.num_transformer_feat_level]
            cls_scores, mask_preds, attn_mask = self._forward_head(query, mask_features, next_size)
            all_cls_scores.append(cls_scores)
            all_mask_preds.append(mask_preds)
        return all_cls_scores, all_mask_preds

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_queries={self.num_queries}, mask_channels={self.mask_channels}"
