"""transformers' Swin backbone (`SwinBackbone`, as inside `Mask2FormerForUniversalSegmentation`) → our
MMSegmentation-style `SwinTransformer`: its config and state dict, as pure functions on dicts.

transformers' saved names (4.x, the Hub checkpoints) and its 5.x in-memory names are both read and
first brought to the original Swin layout (`layers.{i}.blocks.{j}.attn.qkv`, `mlp.fc1`, ...), which
`convert.backbones.swin_state_dict_from_timm` turns into ours (patch merging reordered for
`nn.Unfold`). The per-stage output norms `hidden_states_norms.stage{k}` become `norm{k-1}`.

Both Swins pad to whole windows before the shift and any input size works; transformers' shrinks the
window (and drops the shift) of a stage whose map is not larger than the window, ours never does
(MMSegmentation's), so features agree exactly when every returned map is larger than the window
(e.g. any input over 224 pixels a side for window 7, 384 for window 12).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .backbones import swin_state_dict_from_timm

_BLOCK = re.compile(r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_DOWNSAMPLE = re.compile(r"encoder\.layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)")
_QKV = re.compile(r"^(?:attention\.self\.(query|key|value)|attention\.([qkv])_proj)\.(weight|bias)$")
_BLOCK_RULES = (  # transformers (saved 4.x or in-memory 5.x) → original Swin, inside a block
    (r"^layernorm_before\.", "norm1."),
    (r"^layernorm_after\.", "norm2."),
    (r"^attention\.self\.relative_position_bias_table$", "attn.relative_position_bias_table"),
    (
        r"^attention\.relative_position_bias\.relative_position_bias_table$",
        "attn.relative_position_bias_table",
    ),
    (r"^attention\.self\.relative_position_index$", "attn.relative_position_index"),
    (r"^attention\.output\.dense\.", "attn.proj."),
    (r"^attention\.o_proj\.", "attn.proj."),
    (r"^intermediate\.dense\.", "mlp.fc1."),
    (r"^output\.dense\.", "mlp.fc2."),
    (r"^mlp\.fc([12])\.", r"mlp.fc\1."),
)


def _stages(names: list[str] | None, num_stages: int) -> list[int]:
    names = names or [f"stage{i + 1}" for i in range(num_stages)]
    out = []
    for name in names:
        match = re.fullmatch(r"stage(\d+)", str(name))
        if not match or not 1 <= int(match.group(1)) <= num_stages:
            raise ValueError(f"transformers Swin out_features: {name!r} is not stage1..stage{num_stages}")
        out.append(int(match.group(1)) - 1)
    return out


def swin_backbone_from_transformers(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """Our `SwinTransformer` config and its output channels for a transformers `SwinConfig` dict."""
    depths = [int(d) for d in config.get("depths", (2, 2, 6, 2))]
    embed = int(config.get("embed_dim", 96))
    patch = int(config.get("patch_size", 4))
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"transformers Swin: hidden_act {config['hidden_act']!r} (only gelu)")
    if config.get("use_absolute_embeddings", False):
        raise ValueError("transformers Swin: use_absolute_embeddings=True is not supported")
    if float(config.get("layer_norm_eps", 1e-5)) != 1e-5:
        raise ValueError(f"transformers Swin: layer_norm_eps {config['layer_norm_eps']} (only 1e-5)")
    out_indices = _stages(config.get("out_features"), len(depths))
    backbone = {
        "type": "SwinTransformer",
        "pretrain_img_size": int(config.get("image_size", 224)),
        "embed_dims": embed,
        "patch_size": patch,
        "window_size": int(config.get("window_size", 7)),
        "mlp_ratio": float(config.get("mlp_ratio", 4.0)),
        "depths": depths,
        "num_heads": [int(h) for h in config.get("num_heads", (3, 6, 12, 24))],
        "strides": [patch] + [2] * (len(depths) - 1),
        "out_indices": out_indices,
        "qkv_bias": bool(config.get("qkv_bias", True)),
        "drop_rate": float(config.get("hidden_dropout_prob", 0.0)),
        "attn_drop_rate": float(config.get("attention_probs_dropout_prob", 0.0)),
        "drop_path_rate": float(config.get("drop_path_rate", 0.1)),
        "pretrained": None,
    }
    return backbone, [embed * 2**i for i in out_indices]


def relative_position_index(window: int) -> torch.Tensor:
    """The original Swin's `(window², window²)` index into the relative position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def swin_state_dict_from_transformers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers `SwinBackbone` state dict (`embeddings.*`, `encoder.*`, `hidden_states_norms.*`,
    optionally under `swin.`) → our `SwinTransformer` state dict (with each block's position index)."""
    original: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    norms: dict[str, torch.Tensor] = {}
    windows: dict[tuple[str, str], int] = {}
    for key, value in state.items():
        key = key.removeprefix("swin.")
        if key.startswith("embeddings.patch_embeddings.projection."):
            original["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("embeddings.norm."):
            original["patch_embed.norm." + key.rsplit(".", 1)[1]] = value
        elif match := re.fullmatch(r"hidden_states_norms\.stage(\d+)\.(weight|bias)", key):
            norms[f"norm{int(match.group(1)) - 1}.{match.group(2)}"] = value
        elif match := _DOWNSAMPLE.fullmatch(key):
            original[f"layers.{match.group(1)}.downsample.{match.group(2)}.{match.group(3)}"] = value
        elif key.startswith("layernorm."):
            continue  # the classification model's final norm; the backbone returns the stage norms
        elif match := _BLOCK.match(key):
            stage, block, rest = match.groups()
            if part := _QKV.match(rest):
                name = part.group(1) or {"q": "query", "k": "key", "v": "value"}[part.group(2)]
                qkv.setdefault((stage, block, part.group(3)), {})[name] = value
                continue
            for pattern, repl in _BLOCK_RULES:
                new, count = re.subn(pattern, repl, rest)
                if count:
                    original[f"layers.{stage}.blocks.{block}.{new}"] = value
                    if new == "attn.relative_position_bias_table":
                        windows[(stage, block)] = (int(round(value.shape[0] ** 0.5)) + 1) // 2
                    break
            else:
                raise ValueError(f"transformers Swin: no rule for the key {key}")
        else:
            raise ValueError(f"transformers Swin: no rule for the key {key}")
    for (stage, block, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"transformers Swin block {stage}.{block}: q/k/v {kind} incomplete")
        original[f"layers.{stage}.blocks.{block}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0
        )
    for (stage, block), window in windows.items():
        index = f"layers.{stage}.blocks.{block}.attn.relative_position_index"
        original.setdefault(index, relative_position_index(window))
    return {**swin_state_dict_from_timm(original), **norms}
