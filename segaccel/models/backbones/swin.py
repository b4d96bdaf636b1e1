"""MMSegmentation's Swin Transformer backbone (`SwinTransformer`), with its names and its behaviour.

Swin Transformer: Hierarchical Vision Transformer using Shifted Windows (https://arxiv.org/abs/2103.14030).
What differs from timm's Swin, and is MMSegmentation's here:

- any input size: the patch embedding and every patch merging pad right/bottom to a multiple of their
  stride ("corner" padding), and each attention layer pads its map to whole windows *before* the
  cyclic shift (the shift mask is built on the padded map), then crops back;
- the window size and shift never shrink to the feature map (timm drops the shift of a stage whose map
  is not larger than the window, e.g. the last stage at 224x224);
- patch merging gathers each 2x2 neighbourhood with `nn.Unfold` (channel-major order);
- every returned stage has its own LayerNorm (`norm0`..`norm3`).

Module names (MMSegmentation's state dict):

    patch_embed.projection / .norm
    stages.{i}.blocks.{j}.norm1 / .attn.w_msa.{qkv,proj,relative_position_bias_table,relative_position_index}
    stages.{i}.blocks.{j}.norm2 / .ffn.layers.0.0 (fc1) / .ffn.layers.1 (fc2)
    stages.{i}.downsample.norm / .reduction      (the patch merging after stage i)
    norm{i}                                      (per returned stage)

`pretrained` takes timm's (`timm/swin_tiny_patch4_window7_224.ms_in1k`), the original authors' or
MMSegmentation's weights (see `segaccel.models.backbones.pretrained`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn
from torch.fx.experimental.symbolic_shapes import statically_known_true

from segaccel.convert.backbones import swin_state_dict_from_timm

from ..utils import build_activation
from .mit import DropPath
from .pretrained import load_backbone_pretrained


def _pad_to_multiple(x: torch.Tensor, stride: int) -> torch.Tensor:
    """`(N, C, H, W)` padded right/bottom with zeros to multiples of `stride` (MMSeg's corner padding)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = _to_multiple(h, stride) - h, _to_multiple(w, stride) - w
    return x if _known_zero(pad_h, pad_w) else F.pad(x, (0, pad_w, 0, pad_h))


def _to_multiple(size: int | torch.SymInt, multiple: int) -> int | torch.SymInt:
    """`size` rounded up to a multiple of `multiple` (written with floor divisions only, which stay short
    when torch.export traces the size as a symbol through the stages; `-size % multiple` does not)."""
    return (size + multiple - 1) // multiple * multiple


def _known_zero(*sizes: int | torch.SymInt) -> bool:
    """All `sizes` are 0 (always False for a symbolic size: torch.export then keeps the general path)."""
    return all(statically_known_true(s == 0) for s in sizes)


class PatchEmbed(nn.Module):
    """Non-overlapping `patch_size` conv (input padded to a multiple), then LayerNorm over tokens."""

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int, norm: bool) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dims) if norm else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.projection(_pad_to_multiple(x, self.patch_size))
        hw_shape = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        return (self.norm(x) if self.norm is not None else x), hw_shape


class PatchMerging(nn.Module):
    """2x2 (`stride`) neighbourhoods gathered by `nn.Unfold`, LayerNorm, Linear to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2, norm: bool = True) -> None:
        super().__init__()
        self.stride = stride
        self.out_channels = out_channels
        self.sampler = nn.Unfold(kernel_size=stride, stride=stride)
        sample_dim = stride * stride * in_channels
        self.norm = nn.LayerNorm(sample_dim) if norm else None
        self.reduction = nn.Linear(sample_dim, out_channels, bias=False)

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        n, _, c = x.shape
        x = _pad_to_multiple(x.transpose(1, 2).reshape(n, c, *hw_shape), self.stride)
        out_hw = (x.shape[2] // self.stride, x.shape[3] // self.stride)
        x = self.sampler(x).transpose(1, 2)  # (N, h*w, stride*stride*C), channel-major
        x = self.norm(x) if self.norm is not None else x
        return self.reduction(x), out_hw


class WindowMSA(nn.Module):
    """Multi-head self-attention inside one window, with a relative position bias table."""

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        window_size: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = qk_scale or (embed_dims // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # index of the bias of (query i, key j), as MMSegmentation computes it (a persistent buffer)
        seq1 = torch.arange(0, (2 * window_size - 1) * window_size, 2 * window_size - 1)
        seq2 = torch.arange(0, window_size)
        coords = (seq1[:, None] + seq2[None, :]).reshape(1, -1)
        self.register_buffer("relative_position_index", (coords + coords.T).flip(1).contiguous())
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop_rate)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(num_windows*N, window_size**2, C)`; `mask` `(num_windows, ws**2, ws**2)` of 0 / -100."""
        b, length, c = x.shape
        qkv = self.qkv(x).reshape(b, length, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(length, length, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(b // windows, windows, self.num_heads, length, length) + mask[None, :, None]
            attn = attn.view(-1, self.num_heads, length, length)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(b, length, c)
        return self.proj_drop(self.proj(x))


class ShiftWindowMSA(nn.Module):
    """(Shifted) window attention on a token map of any size: padded to whole windows, then shifted."""

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        window_size: int,
        shift_size: int = 0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"SwinTransformer: shift_size {shift_size} must lie in [0, window_size)")
        self.window_size = window_size
        self.shift_size = shift_size
        self.w_msa = WindowMSA(
            embed_dims, num_heads, window_size, qkv_bias, qk_scale, attn_drop_rate, proj_drop_rate
        )
        self.drop = DropPath(drop_path_rate)

    def forward(self, query: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        n, length, c = query.shape
        h, w = hw_shape
        ws, shift = self.window_size, self.shift_size
        query = query.view(n, h, w, c)
        pad_r, pad_b = _to_multiple(w, ws) - w, _to_multiple(h, ws) - h
        query = F.pad(query, (0, 0, 0, pad_r, 0, pad_b))
        h_pad, w_pad = query.shape[1], query.shape[2]
        mask = None
        if shift > 0:
            query = torch.roll(query, shifts=(-shift, -shift), dims=(1, 2))
            mask = self._shift_mask(h_pad, w_pad, query.device)
        windows = self._partition(query).view(-1, ws * ws, c)
        windows = self.w_msa(windows, mask=mask).view(-1, ws, ws, c)
        x = self._reverse(windows, h_pad, w_pad)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        if not _known_zero(pad_r, pad_b):
            x = x[:, :h, :w, :].contiguous()
        return self.drop(x.view(n, h * w, c))

    def _shift_mask(self, h_pad: int, w_pad: int, device: torch.device) -> torch.Tensor:
        """0 between tokens of the same region of the shifted map, -100 across regions."""
        ws, shift = self.window_size, self.shift_size
        img_mask = torch.zeros((1, h_pad, w_pad, 1), device=device)
        slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
        count = 0
        for hs in slices:
            for wsl in slices:
                img_mask[:, hs, wsl, :] = count
                count += 1
        mask_windows = self._partition(img_mask).view(-1, ws * ws)
        mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

    def _partition(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        ws = self.window_size
        x = x.view(n, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        return x.contiguous().view(-1, ws, ws, c)

    def _reverse(self, windows: torch.Tensor, h: int, w: int) -> torch.Tensor:
        ws = self.window_size
        n = windows.shape[0] // ((h // ws) * (w // ws))
        x = windows.view(n, h // ws, w // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
        return x.contiguous().view(n, h, w, -1)


class FFN(nn.Module):
    """mmcv's FFN with two layers: `layers.0.0` Linear → act → dropout, `layers.1` Linear → dropout."""

    def __init__(
        self, embed_dims: int, hidden: int, act_cfg: dict[str, Any], drop_rate: float, drop_path_rate: float
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, hidden), build_activation(act_cfg), nn.Dropout(drop_rate)),
            nn.Linear(hidden, embed_dims),
            nn.Dropout(drop_rate),
        )
        self.dropout_layer = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return identity + self.dropout_layer(self.layers(x))


class SwinBlock(nn.Module):
    """norm1 → (shifted) window attention → residual; norm2 → FFN → residual."""

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        feedforward_channels: int,
        window_size: int,
        shift: bool,
        qkv_bias: bool,
        qk_scale: float | None,
        drop_rate: float,
        attn_drop_rate: float,
        drop_path_rate: float,
        act_cfg: dict[str, Any],
        with_cp: bool,
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = ShiftWindowMSA(
            embed_dims,
            num_heads,
            window_size,
            window_size // 2 if shift else 0,
            qkv_bias,
            qk_scale,
            attn_drop_rate,
            drop_rate,
            drop_path_rate,
        )
        self.norm2 = nn.LayerNorm(embed_dims)
        self.ffn = FFN(embed_dims, feedforward_channels, act_cfg, drop_rate, drop_path_rate)

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        def inner(x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x), hw_shape)
            return self.ffn(self.norm2(x), identity=x)

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(inner, x, use_reentrant=False)
        return inner(x)


class SwinBlockSequence(nn.Module):
    """One stage: `depth` blocks (every second one shifted), then the patch merging (if any)."""

    def __init__(self, depth: int, downsample: PatchMerging | None, **block_args: Any) -> None:
        super().__init__()
        rates = block_args.pop("drop_path_rates")
        self.blocks = nn.ModuleList(
            SwinBlock(shift=i % 2 == 1, drop_path_rate=rates[i], **block_args) for i in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        for block in self.blocks:
            x = block(x, hw_shape)
        if self.downsample is None:
            return x, hw_shape, x, hw_shape
        x_down, down_hw = self.downsample(x, hw_shape)
        return x_down, down_hw, x, hw_shape


class SwinTransformer(nn.Module):
    """MMSegmentation's Swin: `(N, C_in, H, W)` (any size) → `[(N, C_i, h_i, w_i) for i in out_indices]`.

    Args: as MMSegmentation's `SwinTransformer`: `pretrain_img_size` (only for `use_abs_pos_embed`),
    `in_channels`, `embed_dims` (96 for Swin-T), `patch_size`, `window_size`, `mlp_ratio`, `depths`,
    `num_heads`, `strides` (patch embedding, then each patch merging), `out_indices`, `qkv_bias`,
    `qk_scale`, `patch_norm`, `drop_rate`, `attn_drop_rate`, `drop_path_rate` (linear over all
    blocks), `use_abs_pos_embed`, `act_cfg`, `norm_cfg` (LayerNorm only), `with_cp`, `frozen_stages`;
    `pretrained`: see the module docstring.
    """

    # The blocks FSDP shards as one unit each (Accelerate's TRANSFORMER_BASED_WRAP reads this).
    _no_split_modules = ["SwinBlock"]

    def __init__(
        self,
        pretrain_img_size: int | Sequence[int] = 224,
        in_channels: int = 3,
        embed_dims: int = 96,
        patch_size: int = 4,
        window_size: int = 7,
        mlp_ratio: float = 4,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        strides: Sequence[int] = (4, 2, 2, 2),
        out_indices: Sequence[int] = (0, 1, 2, 3),
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        patch_norm: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        use_abs_pos_embed: bool = False,
        act_cfg: dict[str, Any] | None = None,
        norm_cfg: dict[str, Any] | None = None,
        with_cp: bool = False,
        frozen_stages: int = -1,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        num_stages = len(depths)
        if len(num_heads) != num_stages or len(strides) != num_stages:
            raise ValueError(
                f"SwinTransformer: depths {list(depths)}, num_heads {list(num_heads)} and strides "
                f"{list(strides)} need one entry per stage"
            )
        if strides[0] != patch_size:
            raise ValueError(f"SwinTransformer: strides[0] ({strides[0]}) must be patch_size ({patch_size})")
        out_indices = tuple(out_indices)
        if not all(0 <= i < num_stages for i in out_indices):
            raise ValueError(f"SwinTransformer: out_indices {list(out_indices)} out of 0..{num_stages - 1}")
        norm_cfg = dict(norm_cfg or {"type": "LN"})
        if norm_cfg.get("type") != "LN" or set(norm_cfg) - {"type", "requires_grad"}:
            raise ValueError(f"SwinTransformer: norm_cfg must be {{type: LN}}, got {norm_cfg}")
        act_cfg = dict(act_cfg or {"type": "GELU"})
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.use_abs_pos_embed = use_abs_pos_embed
        self.pretrained = pretrained

        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size, norm=patch_norm)
        if use_abs_pos_embed:
            size = pretrain_img_size
            size = (size, size) if isinstance(size, int) else tuple(size)
            self.pos_grid = (size[0] // patch_size, size[1] // patch_size)
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, math.prod(self.pos_grid), embed_dims))
        self.drop_after_pos = nn.Dropout(drop_rate)

        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        channels = embed_dims
        self.num_features = []
        for i, depth in enumerate(depths):
            downsample = None
            if i < num_stages - 1:
                downsample = PatchMerging(channels, 2 * channels, strides[i + 1], norm=patch_norm)
            self.stages.append(
                SwinBlockSequence(
                    depth,
                    downsample,
                    embed_dims=channels,
                    num_heads=num_heads[i],
                    feedforward_channels=int(mlp_ratio * channels),
                    window_size=window_size,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop_rate=drop_rate,
                    attn_drop_rate=attn_drop_rate,
                    drop_path_rates=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    act_cfg=act_cfg,
                    with_cp=with_cp,
                )
            )
            self.num_features.append(channels)
            if downsample is not None:
                channels = downsample.out_channels
        for i in out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self.out_channels = tuple(self.num_features[i] for i in out_indices)

        self.init_weights()
        if pretrained:
            load_backbone_pretrained(self, pretrained, self._convert_pretrained)
        if not norm_cfg.get("requires_grad", True):
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.requires_grad_(False)
        self._freeze_stages()

    def init_weights(self) -> None:
        """MMSegmentation's init without weights: trunc-normal(0.02) Linear, LayerNorm 1/0."""
        if self.use_abs_pos_embed:
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _convert_pretrained(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename to ours, and resize relative position tables of another window size (bicubic, as MMSeg)."""
        state = swin_state_dict_from_timm(state)
        own = self.state_dict()
        for key, table in list(state.items()):
            if not key.endswith("relative_position_bias_table") or key not in own:
                continue
            (l1, heads1), (l2, heads2) = table.shape, own[key].shape
            if l1 != l2 and heads1 == heads2:
                s1, s2 = int(l1**0.5), int(l2**0.5)
                grid = table.permute(1, 0).reshape(1, heads1, s1, s1)
                state[key] = F.interpolate(grid, size=(s2, s2), mode="bicubic").view(heads2, l2).permute(1, 0)
            if key.replace("bias_table", "index") in state and l1 != l2:
                del state[key.replace("bias_table", "index")]
        return state

    def _freeze_stages(self) -> None:
        frozen: list[nn.Module] = []
        if self.frozen_stages >= 0:
            frozen += [self.patch_embed, self.drop_after_pos]
            if self.use_abs_pos_embed:
                self.absolute_pos_embed.requires_grad = False
        for i in range(1, self.frozen_stages + 1):
            if i - 1 in self.out_indices:
                frozen.append(getattr(self, f"norm{i - 1}"))
            frozen.append(self.stages[i - 1])
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> SwinTransformer:
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """`(N, C_in, H, W)` → `[(N, C_i, h_i, w_i) for i in out_indices]`, `h_0 = ceil(H / patch_size)`."""
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            if x.shape[1] != self.absolute_pos_embed.shape[1]:
                raise ValueError(
                    f"SwinTransformer: use_abs_pos_embed needs a {self.pos_grid} patch grid "
                    f"(pretrain_img_size), got {hw_shape}"
                )
            x = x + self.absolute_pos_embed
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages[: max(self.out_indices) + 1]):
            x, hw_shape, out, out_hw = stage(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outs.append(out.view(-1, *out_hw, self.num_features[i]).permute(0, 3, 1, 2).contiguous())
        return outs
