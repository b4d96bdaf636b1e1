"""Mask2Former's masked-attention transformer decoder (mmdet's `Mask2FormerTransformerDecoder`).

Each layer: the queries attend to one level of the pixel decoder's maps, restricted to where the
previous prediction's mask is on (masked cross-attention) → LayerNorm → self-attention among the
queries → LayerNorm → FFN → LayerNorm (post-norm, cross-attention first, as in the paper).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from segaccel.models.heads.mask2former.layers import FFN, MultiheadAttention

_ATTN = {"embed_dims": 256, "num_heads": 8, "attn_drop": 0.0, "proj_drop": 0.0}  # shared; never mutated
_LAYER = {
    "self_attn_cfg": _ATTN,
    "cross_attn_cfg": _ATTN,
    "ffn_cfg": {"embed_dims": 256, "feedforward_channels": 2048, "num_fcs": 2, "ffn_drop": 0.0},
}


class MaskedAttentionDecoderLayer(nn.Module):
    """Masked cross-attention → norm → self-attention → norm → FFN → norm (mmdet's names)."""

    def __init__(
        self,
        self_attn_cfg: dict[str, Any] = _ATTN,
        cross_attn_cfg: dict[str, Any] = _ATTN,
        ffn_cfg: dict[str, Any] = _LAYER["ffn_cfg"],
        norm_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if norm_cfg is not None and norm_cfg.get("type") != "LN":
            raise ValueError(f"transformer_decoder.layer_cfg.norm_cfg: only LN, got {norm_cfg!r}")
        self.self_attn = MultiheadAttention(**self_attn_cfg)
        self.cross_attn = MultiheadAttention(**cross_attn_cfg)
        self.ffn = FFN(**ffn_cfg)
        dims = self.self_attn.embed_dims
        self.embed_dims = dims
        self.norms = nn.ModuleList(nn.LayerNorm(dims) for _ in range(3))

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        query_pos: torch.Tensor,
        key_pos: torch.Tensor,
        cross_attn_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """`query (N, Q, C)`, `key (N, HW, C)`; `cross_attn_mask (N * heads, Q, HW)`, True = masked."""
        query = self.cross_attn(query, key, key, query_pos, key_pos, attn_mask=cross_attn_mask)
        query = self.norms[0](query)
        query = self.self_attn(query, query, query, query_pos, query_pos)
        query = self.norms[1](query)
        return self.norms[2](self.ffn(query))


class MaskedAttentionDecoder(nn.Module):
    """`num_layers` decoder layers and the `post_norm` applied before every prediction.

    Args:
        num_layers: decoder layers (9 in Mask2Former: 10 predictions with the one before them).
        layer_cfg: `{self_attn_cfg, cross_attn_cfg, ffn_cfg}` (mmdet's layout).
        return_intermediate: must be True (every layer's queries are predicted from).
    """

    def __init__(
        self,
        num_layers: int = 9,
        layer_cfg: dict[str, Any] = _LAYER,
        return_intermediate: bool = True,
        init_cfg: None = None,
    ) -> None:
        super().__init__()
        if not return_intermediate:
            raise ValueError("transformer_decoder.return_intermediate must be True (deep supervision)")
        self.layers = nn.ModuleList(MaskedAttentionDecoderLayer(**layer_cfg) for _ in range(num_layers))
        if num_layers < 1:
            raise ValueError(f"transformer_decoder.num_layers must be at least 1, got {num_layers}")
        self.embed_dims = self.layers[0].embed_dims
        self.num_heads = self.layers[0].cross_attn.num_heads
        self.post_norm = nn.LayerNorm(self.embed_dims)
