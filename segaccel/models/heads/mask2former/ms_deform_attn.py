"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch: `grid_sample`, no compiled op.

Each query looks at `num_points` learned offsets around its reference point on each of `num_levels`
feature maps and takes their softmax-weighted sum. The sampling is bilinear with zero padding and
`align_corners=False`, exactly as mmcv's `multi_scale_deformable_attn_pytorch` and the CUDA kernel of
the original code compute it. Module and parameter names are mmcv's `MultiScaleDeformableAttention`
(`sampling_offsets`, `attention_weights`, `value_proj`, `output_proj`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Sample and weight the values of every level.

    Args:
        value: `(N, S, heads, C_head)`, the levels' flattened maps one after the other
            (`S = sum(h_l * w_l)`).
        spatial_shapes: `(h_l, w_l)` of each level, in the order of `value`.
        sampling_locations: `(N, Q, heads, levels, points, 2)`, `(x, y)` in `[0, 1]` of each level.
        attention_weights: `(N, Q, heads, levels, points)`, softmax-normalised over levels × points.

    Returns:
        `(N, Q, heads * C_head)`.
    """
    n, _, heads, head_dim = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1]
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes):
        # (N, h*w, heads, C) → (N*heads, C, h, w)
        value_l = values[level].flatten(2).transpose(1, 2).reshape(n * heads, head_dim, h, w)
        # (N, Q, heads, points, 2) → (N*heads, Q, points, 2)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        # (N*heads, C, Q, points)
        sampled.append(
            F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    # (N, Q, heads, levels, points) → (N*heads, 1, Q, levels*points)
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, q, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (N*heads, C, Q)
    return out.view(n, heads * head_dim, q).transpose(1, 2).contiguous()


class MultiScaleDeformableAttention(nn.Module):
    """mmcv's `MultiScaleDeformableAttention` (batch first), residual included.

    Args:
        embed_dims: channels of queries and values.
        num_heads: attention heads.
        num_levels: feature levels attended.
        num_points: sampling points per head and level.
        dropout: dropout on the output before the residual.
    """

    def __init__(
        self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims ({embed_dims}) must be divisible by num_heads ({num_heads})")
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self) -> None:
        """mmcv's init: offsets start on a ring per head (radius 1..points), uniform attention."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        for i in range(self.num_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        value: torch.Tensor,
        query_pos: torch.Tensor | None,
        reference_points: torch.Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`query + attention(query + query_pos → value)`.

        Args:
            query: `(N, Q, C)`.
            value: `(N, S, C)`, the levels flattened one after the other.
            query_pos: `(N, Q, C)` added to the query before the offsets and weights, or None.
            reference_points: `(N, Q, levels, 2)`, `(x, y)` in `[0, 1]`.
            spatial_shapes: `(h_l, w_l)` per level.
            key_padding_mask: `(N, S)`, True where a value is padding (zeroed), or None.

        Returns:
            `(N, Q, C)`.
        """
        identity = query
        if query_pos is not None:
            query = query + query_pos
        n, q, _ = query.shape
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(n, value.shape[1], self.num_heads, -1)
        offsets = self.sampling_offsets(query).view(n, q, self.num_heads, self.num_levels, self.num_points, 2)
        weights = self.attention_weights(query).view(n, q, self.num_heads, self.num_levels * self.num_points)
        weights = weights.softmax(-1).view(n, q, self.num_heads, self.num_levels, self.num_points)
        # offsets are in pixels of each level: normalise by its (w, h), divided as the sizes come (Python
        # ints, or symbols under torch.export: no tensor of sizes, which would pin them)
        normalized = torch.stack(
            [torch.stack((offsets[..., level, :, 0] / w, offsets[..., level, :, 1] / h), -1)
             for level, (h, w) in enumerate(spatial_shapes)],
            dim=3,
        )
        locations = reference_points[:, :, None, :, None, :] + normalized
        out = multi_scale_deformable_attention(value, spatial_shapes, locations, weights)
        return identity + self.dropout(self.output_proj(out))

    def extra_repr(self) -> str:
        return (
            f"embed_dims={self.embed_dims}, num_heads={self.num_heads}, num_levels={self.num_levels}, "
            f"num_points={self.num_points}"
        )
