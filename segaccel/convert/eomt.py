"""transformers' EoMT → segaccel: configs and state dicts, as pure functions on dicts.

An `EomtForUniversalSegmentation` checkpoint (e.g. `tue-mps/ade20k_semantic_eomt_large_512`: DINOv2
with registers, 16-pixel patches) becomes a `Segmentor` with a ViT `TimmBackbone`
(`vit_{small,base,large}_patch14_reg4_dinov2` re-patched to the checkpoint's patch size, learnt
position embedding at its `image_size` grid, every block and the final norm kept) and our `EoMTHead`:

    embeddings.cls_token / register_tokens          backbone.timm_model.cls_token / reg_token
    embeddings.patch_embeddings.projection          backbone.timm_model.patch_embed.proj
    embeddings.position_embeddings.weight (P, C)     backbone.timm_model.pos_embed (1, P, C)
    layers.{i}.norm1 / norm2 / mlp.fc1 / mlp.fc2     backbone.timm_model.blocks.{i}.(same)
    layers.{i}.attention.{q,k,v}_proj (concatenated) backbone.timm_model.blocks.{i}.attn.qkv
    layers.{i}.attention.out_proj                    backbone.timm_model.blocks.{i}.attn.proj
    layers.{i}.layer_scale{1,2}.lambda1              backbone.timm_model.blocks.{i}.ls{1,2}.gamma
    layernorm                                        backbone.timm_model.norm
    query / class_predictor                          decode_head.q / decode_head.class_head
    mask_head.fc{1,2,3}                              decode_head.mask_head.{0,2,4}
    upscale_block.block.{j}.conv1 / conv2 / layernorm2d   decode_head.upscale.{j}.conv1 / conv2 / norm
    attn_mask_probs                                  decode_head.attn_mask_probs

`criterion.empty_weight` (fixed by the config) is left out. Semantic repos split each image into
square windows of the processor's `shortest_edge` along its long side (`do_split_image`): that is our
slide inference with crop = stride = that size (the same windows for up to two per image).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .mask2former import preprocessing_from_image_processor

_DINOV2_REG = {
    384: "vit_small_patch14_reg4_dinov2",
    768: "vit_base_patch14_reg4_dinov2",
    1024: "vit_large_patch14_reg4_dinov2",
}
_DINOV2_LAYOUT = {  # (depth, heads) of those models
    384: (12, 6), 768: (12, 12), 1024: (24, 16),
}
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_LAYER_RULES = (
    (r"^norm([12])\.", r"norm\1."),
    (r"^mlp\.fc([12])\.", r"mlp.fc\1."),
    (r"^attention\.out_proj\.", "attn.proj."),
    (r"^layer_scale([12])\.lambda1$", r"ls\1.gamma"),
)
_QKV = re.compile(r"^attention\.([qkv])_proj\.(weight|bias)$")
_HEAD_RULES = (
    (r"^query\.", "q."),
    (r"^class_predictor\.", "class_head."),
    (r"^mask_head\.fc1\.", "mask_head.0."),
    (r"^mask_head\.fc2\.", "mask_head.2."),
    (r"^mask_head\.fc3\.", "mask_head.4."),
    (r"^upscale_block\.block\.(\d+)\.conv([12])\.", r"upscale.\1.conv\2."),
    (r"^upscale_block\.block\.(\d+)\.layernorm2d\.", r"upscale.\1.norm."),
    (r"^attn_mask_probs$", "attn_mask_probs"),
)
_BACKBONE_RULES = (
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.register_tokens$", "reg_token"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^layernorm\.", "norm."),
)


def is_transformers_eomt(config: Mapping[str, Any] | None) -> bool:
    """Whether a `config.json` was written by transformers for an EoMT (`model_type: eomt`)."""
    return isinstance(config, Mapping) and config.get("model_type") == "eomt"


def eomt_backbone_from_transformers(config: Mapping[str, Any]) -> dict[str, Any]:
    """Our ViT `TimmBackbone` config for a transformers `EomtConfig` dict (DINOv2 with registers)."""
    if config.get("use_swiglu_ffn", False):
        raise ValueError("transformers EoMT: use_swiglu_ffn (ViT-g) is not supported")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"transformers EoMT: hidden_act {config['hidden_act']!r} (only gelu)")
    if float(config.get("layer_norm_eps", 1e-6)) != 1e-6:
        raise ValueError(f"transformers EoMT: layer_norm_eps {config['layer_norm_eps']} (DINOv2's is 1e-6)")
    dims = int(config.get("hidden_size", 1024))
    depth = int(config.get("num_hidden_layers", 24))
    heads = int(config.get("num_attention_heads", 16))
    image_size = config.get("image_size", 640)
    if not isinstance(image_size, int):
        raise ValueError(f"transformers EoMT: image_size {image_size!r} (a square int expected)")
    name = _DINOV2_REG.get(dims, "vit_small_patch14_reg4_dinov2")
    kwargs: dict[str, Any] = {"img_size": image_size, "patch_size": int(config.get("patch_size", 16))}
    if (depth, heads) != _DINOV2_LAYOUT.get(dims) or dims not in _DINOV2_REG:
        kwargs.update(embed_dim=dims, depth=depth, num_heads=heads)
    if float(config.get("mlp_ratio", 4)) != 4:
        kwargs["mlp_ratio"] = float(config["mlp_ratio"])
    if int(config.get("num_register_tokens", 4)) != 4:
        kwargs["reg_tokens"] = int(config["num_register_tokens"])
    if float(config.get("drop_path_rate", 0.0)):
        kwargs["drop_path_rate"] = float(config["drop_path_rate"])
    return {
        "type": "TimmBackbone",
        "model_name": name,
        "pretrained": None,
        "out_indices": [depth - 1],
        "final_norm": True,
        "model_kwargs": kwargs,
    }


def eomt_config_from_transformers(
    config: Mapping[str, Any], preprocessor_config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`Segmentor` arguments for a transformers `EomtForUniversalSegmentation` config dict.

    Class names come from `id2label`; normalisation, test-time resize and windows from
    `preprocessor_config` (its `EomtImageProcessor` defaults when None).
    """
    backbone = eomt_backbone_from_transformers(config)
    id2label = config.get("id2label")
    num_classes = len(id2label) if id2label else int(config.get("num_labels", 2))
    num_points = int(config.get("train_num_points", 12544))
    head = {
        "type": "EoMTHead",
        "in_channels": int(config.get("hidden_size", 1024)),
        "num_classes": num_classes,
        "num_queries": int(config.get("num_queries", 200)),
        "num_blocks": int(config.get("num_blocks", 4)),
        "patch_size": int(config.get("patch_size", 16)),
        "num_upscale_blocks": int(config.get("num_upscale_blocks", 2)),
        "loss_decode": {
            "type": "MaskClassificationLoss",
            "class_weight": float(config.get("class_weight", 2.0)),
            "mask_weight": float(config.get("mask_weight", 5.0)),
            "dice_weight": float(config.get("dice_weight", 5.0)),
            "no_object_weight": float(config.get("no_object_weight", 0.1)),
            "num_points": num_points,
            "oversample_ratio": float(config.get("oversample_ratio", 3.0)),
            "importance_sample_ratio": float(config.get("importance_sample_ratio", 0.75)),
            "matcher": {
                "type": "HungarianMatcher",
                "cost_class": float(config.get("class_weight", 2.0)),
                "cost_mask": float(config.get("mask_weight", 5.0)),
                "cost_dice": float(config.get("dice_weight", 5.0)),
                "num_points": num_points,
            },
        },
    }
    pre = dict(preprocessor_config or {})
    size = pre.get("size") or {"shortest_edge": 640, "longest_edge": 640}
    data_preprocessor, test_pipeline = preprocessing_from_image_processor({**pre, "size": size}, size)
    test_cfg: dict[str, Any] = {"mode": "whole"}
    if pre.get("do_split_image", False):
        window = int(size["shortest_edge"]) if isinstance(size, Mapping) else int(size)
        test_cfg = {"mode": "slide", "crop_size": [window, window], "stride": [window, window]}
    return {
        "backbone": backbone,
        "decode_head": head,
        "data_preprocessor": data_preprocessor,
        "test_cfg": test_cfg,
        "id2label": {str(k): str(v) for k, v in id2label.items()} if id2label else None,
        "test_pipeline": test_pipeline,
    }


def _rename(key: str, rules: tuple[tuple[str, str], ...]) -> str | None:
    for pattern, repl in rules:
        new, count = re.subn(pattern, repl, key)
        if count:
            return new
    return None


def eomt_state_dict_from_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers `EomtForUniversalSegmentation` state dict → our Segmentor's (see the module doc)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key in ("criterion.empty_weight", "embeddings.position_ids"):
            continue
        if key == "embeddings.position_embeddings.weight":
            out["backbone.timm_model.pos_embed"] = value[None]
            continue
        if match := _LAYER.match(key):
            layer, rest = match.groups()
            if part := _QKV.match(rest):
                qkv.setdefault((layer, part.group(2)), {})[part.group(1)] = value
                continue
            new = _rename(rest, _LAYER_RULES)
            if new is None:
                raise ValueError(f"transformers EoMT: no rule for the key {key}")
            out[f"backbone.timm_model.blocks.{layer}.{new}"] = value
            continue
        if (new := _rename(key, _BACKBONE_RULES)) is not None:
            out[f"backbone.timm_model.{new}"] = value
        elif (new := _rename(key, _HEAD_RULES)) is not None:
            out[f"decode_head.{new}"] = value
        else:
            raise ValueError(f"not a transformers EoMT state dict; unknown key {key}")
    for (layer, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"transformers EoMT layer {layer}: q/k/v {kind} incomplete")
        qkv_value = torch.cat([parts["q"], parts["k"], parts["v"]])
        out[f"backbone.timm_model.blocks.{layer}.attn.qkv.{kind}"] = qkv_value
    return out
