"""Mix Vision Transformer (MiT), the SegFormer encoder, as in MMSegmentation's `backbones/mit.py`.

SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers
(https://arxiv.org/abs/2105.15203). Four stages; each is an overlapping patch embedding (a strided
conv with padding `patch_size // 2`), a stack of transformer blocks with efficient self-attention
(keys/values spatially reduced by a strided conv + LayerNorm when `sr_ratio > 1`) and a Mix-FFN
(1x1 conv → 3x3 depthwise conv → GELU → 1x1 conv), then a LayerNorm.

Module names follow MMSegmentation's state dict so its checkpoints load unchanged:

    layers.{i}.0.projection / .norm               overlapping patch embedding of stage i
    layers.{i}.1.{j}.norm1 / .norm2               block j of stage i
    layers.{i}.1.{j}.attn.attn.in_proj_weight     q, k, v stacked (3C, C) as in nn.MultiheadAttention
    layers.{i}.1.{j}.attn.attn.in_proj_bias       (3C,)
    layers.{i}.1.{j}.attn.attn.out_proj           Linear(C, C)
    layers.{i}.1.{j}.attn.sr / .norm              spatial reduction (only when sr_ratio > 1)
    layers.{i}.1.{j}.ffn.layers.{0,1,4}           fc1 (1x1), depthwise 3x3, fc2 (1x1)
    layers.{i}.2                                  stage LayerNorm

transformers' checkpoints (`segformer.encoder.*`) differ only in names and in splitting q/k/v; they
need `layer_norm_eps=1e-5` (MMSegmentation uses 1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

# Published MiT variants (MMSegmentation configs `segformer_mit-b*.py`); `embed_dims` is the width of
# one attention head, stage i has `embed_dims * num_heads[i]` channels.
MIT_SETTINGS: dict[str, dict] = {
    "b0": dict(embed_dims=32, num_layers=(2, 2, 2, 2), num_heads=(1, 2, 5, 8)),
    "b1": dict(embed_dims=64, num_layers=(2, 2, 2, 2), num_heads=(1, 2, 5, 8)),
    "b2": dict(embed_dims=64, num_layers=(3, 4, 6, 3), num_heads=(1, 2, 5, 8)),
    "b3": dict(embed_dims=64, num_layers=(3, 4, 18, 3), num_heads=(1, 2, 5, 8)),
    "b4": dict(embed_dims=64, num_layers=(3, 8, 27, 3), num_heads=(1, 2, 5, 8)),
    "b5": dict(embed_dims=64, num_layers=(3, 6, 40, 3), num_heads=(1, 2, 5, 8)),
}
_CLASS_DEFAULTS = dict(embed_dims=64, num_layers=(3, 4, 6, 3), num_heads=(1, 2, 4, 8))


def _to_image(x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
    """Tokens `(N, H*W, C)` → feature map `(N, C, H, W)`."""
    n, _, c = x.shape
    return x.transpose(1, 2).reshape(n, c, *hw_shape)


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    """Feature map `(N, C, H, W)` → tokens `(N, H*W, C)` (a view)."""
    return x.flatten(2).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability `drop_prob`."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = (keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()
        return x.div(keep_prob) * mask

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class OverlapPatchEmbed(nn.Module):
    """Strided conv with padding `patch_size // 2`, then LayerNorm over channels.

    `(N, C_in, H, W)` → tokens `(N, h*w, C)` and `(h, w)` with `h = (H + 2p - k) // s + 1`.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int, stride: int, eps: float) -> None:
        super().__init__()
        self.projection = nn.Conv2d(
            in_channels, embed_dims, kernel_size=patch_size, stride=stride, padding=patch_size // 2
        )
        self.norm = nn.LayerNorm(embed_dims, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.projection(x)
        hw_shape = (x.shape[2], x.shape[3])
        return self.norm(_to_tokens(x)), hw_shape


class MultiheadProjections(nn.Module):
    """The parameters of `nn.MultiheadAttention` (same names and init) without its forward.

    `in_proj_weight` `(3C, C)` stacks the query, key and value projections.
    """

    def __init__(self, embed_dims: int, bias: bool) -> None:
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dims, embed_dims))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dims)) if bias else None
        self.out_proj = nn.Linear(embed_dims, embed_dims, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)


class EfficientMultiheadAttention(nn.Module):
    """Self-attention whose keys/values come from a map shrunk `sr_ratio` times (strided conv + LN).

    Computed with `F.scaled_dot_product_attention`; numerically the same as MMSegmentation's call of
    `nn.MultiheadAttention(query=x, key=x_kv, value=x_kv)`. Adds the residual `identity`.
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
        sr_ratio: int = 1,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims={embed_dims} must be divisible by num_heads={num_heads}")
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.attn = MultiheadProjections(embed_dims, bias=qkv_bias)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dropout_layer = DropPath(drop_path)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(embed_dims, eps=eps)

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int], identity: torch.Tensor) -> torch.Tensor:
        """`x`, `identity`: tokens `(N, L, C)` with `L = h*w`; returns `(N, L, C)`."""
        n, length, c = x.shape
        heads, head_dims = self.num_heads, c // self.num_heads
        weight, bias = self.attn.in_proj_weight, self.attn.in_proj_bias
        if self.sr_ratio > 1:
            x_kv = self.norm(_to_tokens(self.sr(_to_image(x, hw_shape))))
            q = F.linear(x, weight[:c], None if bias is None else bias[:c])
            kv = F.linear(x_kv, weight[c:], None if bias is None else bias[c:])
            q = q.view(n, length, heads, head_dims).transpose(1, 2)
            k, v = kv.view(n, -1, 2, heads, head_dims).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            qkv = F.linear(x, weight, bias)
            q, k, v = qkv.view(n, length, 3, heads, head_dims).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = self.attn.out_proj(out.transpose(1, 2).reshape(n, length, c))
        return identity + self.dropout_layer(self.proj_drop(out))


class MixFFN(nn.Module):
    """1x1 conv → 3x3 depthwise conv (positional information) → GELU → 1x1 conv, plus the residual."""

    def __init__(
        self, embed_dims: int, feedforward_channels: int, ffn_drop: float = 0.0, drop_path: float = 0.0
    ):
        super().__init__()
        drop = nn.Dropout(ffn_drop)
        self.layers = nn.Sequential(
            nn.Conv2d(embed_dims, feedforward_channels, kernel_size=1),
            nn.Conv2d(
                feedforward_channels,
                feedforward_channels,
                kernel_size=3,
                padding=1,
                groups=feedforward_channels,
            ),
            nn.GELU(),
            drop,
            nn.Conv2d(feedforward_channels, embed_dims, kernel_size=1),
            drop,
        )
        self.dropout_layer = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int], identity: torch.Tensor) -> torch.Tensor:
        """`x`, `identity`: tokens `(N, L, C)`; returns `(N, L, C)`."""
        out = _to_tokens(self.layers(_to_image(x, hw_shape)))
        return identity + self.dropout_layer(out)


class TransformerEncoderLayer(nn.Module):
    """Pre-norm block: `x + attn(norm1(x))`, then `x + ffn(norm2(x))`."""

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        feedforward_channels: int,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        qkv_bias: bool = True,
        sr_ratio: int = 1,
        eps: float = 1e-6,
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(embed_dims, eps=eps)
        self.attn = EfficientMultiheadAttention(
            embed_dims,
            num_heads,
            attn_drop=attn_drop_rate,
            proj_drop=drop_rate,
            drop_path=drop_path_rate,
            qkv_bias=qkv_bias,
            sr_ratio=sr_ratio,
            eps=eps,
        )
        self.norm2 = nn.LayerNorm(embed_dims, eps=eps)
        self.ffn = MixFFN(embed_dims, feedforward_channels, ffn_drop=drop_rate, drop_path=drop_path_rate)

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        def inner(x: torch.Tensor) -> torch.Tensor:
            x = self.attn(self.norm1(x), hw_shape, identity=x)
            return self.ffn(self.norm2(x), hw_shape, identity=x)

        # Activation checkpointing: the block's activations are recomputed in the backward (same
        # dropout/drop-path draws: the RNG state is replayed) instead of kept.
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(inner, x, use_reentrant=False)
        return inner(x)


class MixVisionTransformer(nn.Module):
    """The SegFormer encoder: `(N, C_in, H, W)` → list of `(N, C_i, h_i, w_i)` for `out_indices`.

    Stage i has `embed_dims * num_heads[i]` channels (listed in `self.out_channels`) and is
    `strides[0] * ... * strides[i]` times smaller (rounded up: each patch embedding gives
    `h = (H + 2 * (k // 2) - k) // s + 1`), so any input size works.

    `arch="b0"` ... `"b5"` takes `embed_dims`, `num_layers` and `num_heads` from `MIT_SETTINGS`; an
    explicitly given value overrides the preset. Without `arch`, unset values fall back to
    MMSegmentation's class defaults (64, (3, 4, 6, 3), (1, 2, 4, 8)).

    `layer_norm_eps` is 1e-6 in MMSegmentation and 1e-5 in transformers; it must match the
    checkpoint's family. `pretrained` is a local `.safetensors` (or `.pth`/`.bin`, loaded with
    `weights_only=True`) holding this module's state dict (a `backbone.` prefix is accepted); it is
    loaded strictly after initialisation. `with_cp`: activation checkpointing of every block (less
    memory, one more forward of each block in the backward; MMSegmentation's name).
    """

    # The blocks FSDP shards as one unit each (Accelerate's TRANSFORMER_BASED_WRAP reads this).
    _no_split_modules = ["TransformerEncoderLayer"]

    def __init__(
        self,
        in_channels: int = 3,
        embed_dims: int | None = None,
        num_stages: int = 4,
        num_layers: Sequence[int] | None = None,
        num_heads: Sequence[int] | None = None,
        patch_sizes: Sequence[int] = (7, 3, 3, 3),
        strides: Sequence[int] = (4, 2, 2, 2),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        out_indices: Sequence[int] | int = (0, 1, 2, 3),
        mlp_ratio: int = 4,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        layer_norm_eps: float = 1e-6,
        pretrained: str | None = None,
        arch: str | None = None,
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        if arch is not None:
            if arch not in MIT_SETTINGS:
                raise ValueError(
                    f"arch={arch!r} is not a MiT variant; expected one of {', '.join(MIT_SETTINGS)}"
                )
            preset = MIT_SETTINGS[arch]
        else:
            preset = _CLASS_DEFAULTS
        embed_dims = preset["embed_dims"] if embed_dims is None else embed_dims
        num_layers = tuple(preset["num_layers"] if num_layers is None else num_layers)
        num_heads = tuple(preset["num_heads"] if num_heads is None else num_heads)
        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        lengths = {
            "num_layers": len(num_layers),
            "num_heads": len(num_heads),
            "patch_sizes": len(patch_sizes),
            "strides": len(strides),
            "sr_ratios": len(sr_ratios),
        }
        if any(n != num_stages for n in lengths.values()):
            raise ValueError(
                f"MixVisionTransformer: num_stages={num_stages} but the per-stage lengths are {lengths}"
            )
        if not all(0 <= i < num_stages for i in out_indices):
            raise ValueError(f"out_indices={tuple(out_indices)} must lie in [0, {num_stages})")

        self.arch = arch
        self.embed_dims = embed_dims
        self.num_stages = num_stages
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.strides = tuple(strides)
        self.sr_ratios = tuple(sr_ratios)
        self.out_indices = tuple(out_indices)
        self.layer_norm_eps = layer_norm_eps
        self.stage_channels = tuple(embed_dims * h for h in num_heads)
        self.out_channels = tuple(self.stage_channels[i] for i in self.out_indices)
        self._last_stage = max(self.out_indices)

        # stochastic depth grows linearly over all blocks
        dpr = torch.linspace(0, drop_path_rate, sum(num_layers), device="cpu").tolist()
        self.layers = nn.ModuleList()
        cur = 0
        for i, depth in enumerate(num_layers):
            dims = self.stage_channels[i]
            patch_embed = OverlapPatchEmbed(in_channels, dims, patch_sizes[i], strides[i], eps=layer_norm_eps)
            blocks = nn.ModuleList(
                TransformerEncoderLayer(
                    dims,
                    num_heads[i],
                    feedforward_channels=mlp_ratio * dims,
                    drop_rate=drop_rate,
                    attn_drop_rate=attn_drop_rate,
                    drop_path_rate=dpr[cur + j],
                    qkv_bias=qkv_bias,
                    sr_ratio=sr_ratios[i],
                    eps=layer_norm_eps,
                    with_cp=with_cp,
                )
                for j in range(depth)
            )
            norm = nn.LayerNorm(dims, eps=layer_norm_eps)
            self.layers.append(nn.ModuleList([patch_embed, blocks, norm]))
            in_channels = dims
            cur += depth

        self.init_weights()
        if pretrained is not None:
            self.load_pretrained(pretrained)

    def init_weights(self) -> None:
        """MMSegmentation's MiT init: trunc-normal(0.02) Linear, LayerNorm 1/0, conv normal(√(2/fan_out))."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def load_pretrained(self, path: str | Path) -> None:
        """Load this encoder's state dict strictly from a local file (never unpickles arbitrary objects)."""
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(
                f"MixVisionTransformer: pretrained={str(path)!r} is not a local file. Give a .safetensors "
                "(or .pth/.bin) file holding the encoder's state dict; Hub ids are not supported here "
                "yet (they come with the Hub weights, issue 4/7)."
            )
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file), device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
        if state and all(k.startswith("backbone.") for k in state):
            state = {k[len("backbone.") :]: v for k, v in state.items()}
        result = self.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise RuntimeError(
                f"MixVisionTransformer: {file} does not match this encoder "
                f"(arch={self.arch!r}, stage channels {self.stage_channels}); "
                f"missing keys: {result.missing_keys[:8]}{' ...' if len(result.missing_keys) > 8 else ''}; "
                f"unexpected keys: {result.unexpected_keys[:8]}"
                f"{' ...' if len(result.unexpected_keys) > 8 else ''}"
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """`(N, C_in, H, W)` → `[(N, C_i, h_i, w_i) for i in out_indices]`."""
        outs = []
        for i, (patch_embed, blocks, norm) in enumerate(self.layers):
            x, hw_shape = patch_embed(x)
            for block in blocks:
                x = block(x, hw_shape)
            x = _to_image(norm(x), hw_shape)
            if i in self.out_indices:
                outs.append(x)
            if i == self._last_stage:  # later stages would only cost time (and unused parameters)
                break
        return outs
