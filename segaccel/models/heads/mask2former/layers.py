"""Transformer bricks with mmcv's names: `FFN` and `MultiheadAttention` (residual included).

Named as mmcv's (`ffn.layers.0.0`, `ffn.layers.1`, `attn.in_proj_weight`, ...) so MMSegmentation's
Mask2Former configs read the same and its state dicts map one to one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from segaccel.models.utils import build_activation

_RELU = {"type": "ReLU", "inplace": True}  # shared default; never mutated


def _drop_path_free(dropout_layer: dict[str, Any] | None, where: str) -> None:
    if dropout_layer is not None:
        raise ValueError(f"{where}: dropout_layer must be None (drop path is not used by Mask2Former)")


class FFN(nn.Module):
    """`x + Linear(act(Linear(x)))`, with dropout after each Linear.

    Args:
        embed_dims: input and output channels.
        feedforward_channels: hidden channels.
        num_fcs: Linear layers (2).
        act_cfg: activation config.
        ffn_drop: dropout probability.
        dropout_layer: must be None (kept for mmcv's config layout).
        add_identity: add the residual.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        feedforward_channels: int = 1024,
        num_fcs: int = 2,
        act_cfg: dict[str, Any] = _RELU,
        ffn_drop: float = 0.0,
        dropout_layer: dict[str, Any] | None = None,
        add_identity: bool = True,
    ) -> None:
        super().__init__()
        if num_fcs < 2:
            raise ValueError(f"FFN: num_fcs must be at least 2, got {num_fcs}")
        _drop_path_free(dropout_layer, "ffn_cfg")
        self.embed_dims = embed_dims
        layers: list[nn.Module] = []
        in_channels = embed_dims
        for _ in range(num_fcs - 1):
            layers.append(
                nn.Sequential(
                    nn.Linear(in_channels, feedforward_channels),
                    build_activation(dict(act_cfg)),
                    nn.Dropout(ffn_drop),
                )
            )
            in_channels = feedforward_channels
        layers.append(nn.Linear(feedforward_channels, embed_dims))
        layers.append(nn.Dropout(ffn_drop))
        self.layers = nn.Sequential(*layers)
        self.add_identity = add_identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(..., C)` → `(..., C)`."""
        out = self.layers(x)
        return x + out if self.add_identity else out


class MultiheadAttention(nn.Module):
    """`query + proj_drop(attn(query + query_pos, key + key_pos, value))`, batch first.

    Args:
        embed_dims: channels.
        num_heads: heads.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout on the output.
        dropout_layer: must be None.
        batch_first: must be True (inputs are `(N, L, C)`).
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        dropout_layer: dict[str, Any] | None = None,
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        _drop_path_free(dropout_layer, "attn_cfg")
        if not batch_first:
            raise ValueError("attn_cfg: only batch_first=True is supported")
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=attn_drop, batch_first=True)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        query_pos: torch.Tensor | None = None,
        key_pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`query (N, Q, C)`, `key`/`value (N, K, C)`; `attn_mask (N * heads, Q, K)`, True = not attended."""
        q = query if query_pos is None else query + query_pos
        k = key if key_pos is None else key + key_pos
        out = self.attn(q, k, value, attn_mask=attn_mask, need_weights=False)[0]
        return query + self.proj_drop(out)
