"""transformers' Mask2Former → segaccel: configs and state dicts, as pure functions on dicts.

A `Mask2FormerForUniversalSegmentation` checkpoint (`facebook/mask2former-swin-tiny-ade-semantic`, ...)
becomes a `Segmentor` with our `Mask2FormerHead` (MMSegmentation's module names) and the backbone:

- a transformers ResNet (`backbone_config.model_type: resnet`) → `TimmBackbone` `resnet*` (the same
  torchvision-style ResNet: 7x7 stem, stride in the 3x3 conv), keys renamed;
- a transformers Swin (`model_type: swin`, the Hub's checkpoints) → our `SwinTransformer`
  (MMSegmentation's; see `transformers_swin`).

Name changes of the head (transformers → ours, under `decode_head.`):

    pixel_level_module.decoder.input_projections.{i}.{0,1}     pixel_decoder.input_convs.{i}.{conv,gn}
    pixel_level_module.decoder.level_embed                      pixel_decoder.level_encoding.weight
    pixel_level_module.decoder.encoder.layers.{j}.self_attn.*   pixel_decoder.encoder.layers.{j}.self_attn.*
        self_attn_layer_norm / final_layer_norm                 norms.0 / norms.1
        fc1 / fc2                                               ffn.layers.0.0 / ffn.layers.1
    pixel_level_module.decoder.adapter_{k}.{0,1}                pixel_decoder.lateral_convs.{k-1}.{conv,gn}
    pixel_level_module.decoder.layer_{k}.{0,1}                  pixel_decoder.output_convs.{k-1}.{conv,gn}
    pixel_level_module.decoder.mask_projection                  pixel_decoder.mask_feature
    transformer_module.queries_embedder / queries_features      query_embed / query_feat
    transformer_module.level_embed / input_projections.{i}      level_embed / decoder_input_projs.{i}
    transformer_module.decoder.layers.{k}.*                     transformer_decoder.layers.{k}.*
        self_attn.{q,k,v}_proj (concatenated)                   self_attn.attn.in_proj_{weight,bias}
        self_attn.out_proj / cross_attn.*                       self_attn.attn.out_proj / cross_attn.attn.*
        cross_attn_ / self_attn_ / final_layer_norm             norms.0 / norms.1 / norms.2
        fc1 / fc2                                               ffn.layers.0.0 / ffn.layers.1
    transformer_module.decoder.layernorm                        transformer_decoder.post_norm
    transformer_module.decoder.mask_predictor.mask_embedder.{m}.0   mask_embed.{2m}
    class_predictor                                             cls_embed

`criterion.empty_weight` (the loss's class weights, fixed by the config) is left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .transformers_swin import swin_backbone_from_transformers, swin_state_dict_from_transformers

TRANSFORMERS_MEAN = (0.485, 0.456, 0.406)  # transformers' image processors' defaults (0-1 scale)
TRANSFORMERS_STD = (0.229, 0.224, 0.225)
_PIXEL = "model.pixel_level_module."
_TRANSFORMER = "model.transformer_module."
_RESNETS = {  # (layer_type, depths) → timm's model of that layout
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
}


def is_transformers_mask2former(config: Mapping[str, Any] | None) -> bool:
    """Whether a `config.json` was written by transformers for a Mask2Former (`model_type: mask2former`)."""
    return isinstance(config, Mapping) and config.get("model_type") == "mask2former"


# --- configs -----------------------------------------------------------------------------------------
def preprocessing_from_image_processor(
    pre: Mapping[str, Any], default_size: Mapping[str, int] | int
) -> tuple[dict[str, Any], list[dict] | None]:
    """Our data preprocessor and test pipeline from a transformers image processor config.

    `image_mean`/`image_std` (0-1 scale) become our 0-255 `mean`/`std`; `size` becomes
    `ResizeShortestEdge(scale=shortest_edge, max_size=longest_edge)` (transformers' semantics for
    `{shortest_edge, longest_edge}` or an int), or `Resize(scale=(w, h), keep_ratio=False)` for
    `{height, width}`; `size_divisor` becomes the preprocessor's padding multiple.
    """
    rescale = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
    if pre.get("do_normalize", True):
        mean = [round(float(m) / rescale, 6) for m in pre.get("image_mean", TRANSFORMERS_MEAN)]
        std = [round(float(s) / rescale, 6) for s in pre.get("image_std", TRANSFORMERS_STD)]
    else:
        mean, std = [0.0, 0.0, 0.0], [1.0 / rescale] * 3
    data_preprocessor: dict[str, Any] = {
        "type": "SegDataPreProcessor", "mean": mean, "std": std, "pad_val": 0, "seg_pad_val": 255
    }
    if pre.get("size_divisor"):
        data_preprocessor["size_divisor"] = int(pre["size_divisor"])
    test_pipeline = None
    if pre.get("do_resize", True):
        size = pre.get("size", default_size)
        if isinstance(size, int):
            size = {"shortest_edge": size, "longest_edge": pre.get("max_size")}
        if isinstance(size, Mapping) and {"height", "width"} <= set(size):
            test_pipeline = [
                {"type": "Resize", "scale": [int(size["width"]), int(size["height"])], "keep_ratio": False}
            ]
        elif isinstance(size, Mapping) and size.get("shortest_edge"):
            longest = size.get("longest_edge")
            test_pipeline = [
                {
                    "type": "ResizeShortestEdge",
                    "scale": int(size["shortest_edge"]),
                    "max_size": int(longest) if longest else None,
                }
            ]
        else:
            raise ValueError(
                f"transformers preprocessor_config: size {size!r} is neither {{height, width}} nor "
                "{shortest_edge, longest_edge}"
            )
    return data_preprocessor, test_pipeline


def _resnet_backbone(bb: Mapping[str, Any], strides: list[int]) -> tuple[dict[str, Any], list[int]]:
    layer_type = bb.get("layer_type", "bottleneck")
    depths = tuple(int(d) for d in bb.get("depths", (3, 4, 6, 3)))
    hidden = [int(h) for h in bb.get("hidden_sizes", (256, 512, 1024, 2048))]
    stem = int(bb.get("embedding_size", 64))
    if layer_type not in ("bottleneck", "basic") or len(depths) != 4:
        raise ValueError(f"transformers ResNet backbone: {layer_type!r} blocks, depths {depths}: unsupported")
    if bb.get("downsample_in_first_stage") or bb.get("downsample_in_bottleneck"):
        raise ValueError(
            "transformers ResNet backbone: downsample_in_first_stage / downsample_in_bottleneck: no timm twin"
        )
    if stem != 64:
        raise ValueError(f"transformers ResNet backbone: embedding_size {stem} (timm's 7x7 stem is 64 wide)")
    if bb.get("hidden_act", "relu") != "relu":
        raise ValueError(f"transformers ResNet backbone: hidden_act {bb['hidden_act']!r} (only relu)")
    expansion = 4 if layer_type == "bottleneck" else 1
    name = _RESNETS.get((layer_type, depths), "resnet50" if expansion == 4 else "resnet18")
    kwargs: dict[str, Any] = {}
    if _RESNETS.get((layer_type, depths)) is None:
        kwargs["layers"] = list(depths)
    channels = [h // expansion for h in hidden]
    if channels != [64, 128, 256, 512]:
        kwargs["channels"] = channels
    stages = _out_stages(bb)
    backbone = {"type": "TimmBackbone", "model_name": name, "pretrained": None, "out_indices": stages}
    if kwargs:
        backbone["model_kwargs"] = kwargs
    return backbone, [hidden[i - 1] for i in stages]


def _out_stages(bb: Mapping[str, Any]) -> list[int]:
    """`out_features: [stage1, ..., stage4]` → `[1, 2, 3, 4]` (the stem is `stem`, i.e. 0)."""
    names = bb.get("out_features") or ["stage1", "stage2", "stage3", "stage4"]
    stages = []
    for name in names:
        match = re.fullmatch(r"stage(\d+)", str(name))
        if not match:
            raise ValueError(f"transformers backbone out_features: {name!r} is not a stage")
        stages.append(int(match.group(1)))
    if len(stages) != 4:
        raise ValueError(f"Mask2Former needs four backbone maps, out_features gives {names}")
    return stages


def mask2former_head_from_transformers(
    config: Mapping[str, Any], in_channels: list[int]
) -> dict[str, Any]:
    """Our `Mask2FormerHead` arguments for a transformers `Mask2FormerConfig` dict."""
    if config.get("pre_norm", False):
        raise ValueError("transformers Mask2Former config: pre_norm=True is not supported (post-norm only)")
    if config.get("activation_function", "relu") != "relu":
        act = config["activation_function"]
        raise ValueError(f"transformers Mask2Former config: activation_function {act!r} (only relu)")
    strides = [int(s) for s in config.get("feature_strides", (4, 8, 16, 32))]
    if int(config.get("common_stride", 4)) != strides[0]:
        raise ValueError(
            f"transformers Mask2Former config: common_stride {config.get('common_stride')} must equal the "
            f"first feature stride {strides[0]} (one FPN level above the deformable encoder)"
        )
    id2label = config.get("id2label")
    num_classes = len(id2label) if id2label else int(config.get("num_labels", 2))
    feat = int(config.get("feature_size", 256))
    dims = int(config.get("hidden_dim", 256))
    heads = int(config.get("num_attention_heads", 8))
    dropout = float(config.get("dropout", 0.0))
    attn = {"embed_dims": dims, "num_heads": heads, "attn_drop": dropout, "proj_drop": dropout}
    num_points = int(config.get("train_num_points", 12544))
    return {
        "type": "Mask2FormerHead",
        "in_channels": in_channels,
        "strides": strides,
        "feat_channels": feat,
        "out_channels": int(config.get("mask_feature_size", 256)),
        "num_classes": num_classes,
        "num_queries": int(config.get("num_queries", 100)),
        "num_transformer_feat_level": 3,
        "pixel_decoder": {
            "num_outs": 3,
            "norm_cfg": {"type": "GN", "num_groups": 32},
            "act_cfg": {"type": "ReLU"},
            "encoder": {
                "num_layers": int(config.get("encoder_layers", 6)),
                "layer_cfg": {
                    "self_attn_cfg": {
                        "embed_dims": feat,
                        "num_heads": heads,
                        "num_levels": 3,
                        "num_points": 4,
                        "dropout": dropout,
                    },
                    "ffn_cfg": {
                        "embed_dims": feat,
                        "feedforward_channels": int(config.get("encoder_feedforward_dim", 1024)),
                        "num_fcs": 2,
                        "ffn_drop": dropout,
                    },
                },
            },
            "positional_encoding": {"num_feats": feat // 2, "normalize": True},
        },
        "enforce_decoder_input_project": bool(config.get("enforce_input_projection", False)),
        "positional_encoding": {"num_feats": dims // 2, "normalize": True},
        "transformer_decoder": {
            "return_intermediate": True,
            "num_layers": int(config.get("decoder_layers", 10)) - 1,
            "layer_cfg": {
                "self_attn_cfg": dict(attn),
                "cross_attn_cfg": dict(attn),
                "ffn_cfg": {
                    "embed_dims": dims,
                    "feedforward_channels": int(config.get("dim_feedforward", 2048)),
                    "num_fcs": 2,
                    "ffn_drop": dropout,
                },
            },
        },
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
        "ignore_index": int(config.get("ignore_value", 255)),
        "align_corners": False,
    }


def mask2former_backbone_from_transformers(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """Our backbone config and its output channels for a transformers Mask2Former config."""
    bb = config.get("backbone_config") or {}
    kind = bb.get("model_type", "swin")
    strides = [int(s) for s in config.get("feature_strides", (4, 8, 16, 32))]
    if kind == "resnet":
        return _resnet_backbone(bb, strides)
    if kind == "swin":
        return swin_backbone_from_transformers(bb)
    raise ValueError(f"transformers Mask2Former: backbone model_type {kind!r} unsupported (resnet, swin)")


def mask2former_config_from_transformers(
    config: Mapping[str, Any], preprocessor_config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`Segmentor` arguments for a transformers `Mask2FormerForUniversalSegmentation` config dict.

    Class names come from `id2label`; normalisation, test-time resize and padding multiple from
    `preprocessor_config` (its `Mask2FormerImageProcessor` defaults when None).
    """
    backbone, in_channels = mask2former_backbone_from_transformers(config)
    head = mask2former_head_from_transformers(config, in_channels)
    data_preprocessor, test_pipeline = preprocessing_from_image_processor(
        {"size_divisor": 32, **(preprocessor_config or {})}, {"shortest_edge": 800, "longest_edge": 1333}
    )
    id2label = config.get("id2label")
    return {
        "backbone": backbone,
        "decode_head": head,
        "data_preprocessor": data_preprocessor,
        "test_cfg": {"mode": "whole"},
        "id2label": {str(k): str(v) for k, v in id2label.items()} if id2label else None,
        "test_pipeline": test_pipeline,
    }


# --- state dicts -------------------------------------------------------------------------------------
_PD = r"pixel_level_module\.decoder\."
_ENC = _PD + r"encoder\.layers\.(\d+)\."
_DEC = r"transformer_module\.decoder\.layers\.(\d+)\."
_OUT_ENC = r"pixel_decoder.encoder.layers.\1."
_OUT_DEC = r"transformer_decoder.layers.\1."
_HEAD_RULES: tuple[tuple[str, str], ...] = (
    (_PD + r"input_projections\.(\d+)\.0\.", r"pixel_decoder.input_convs.\1.conv."),
    (_PD + r"input_projections\.(\d+)\.1\.", r"pixel_decoder.input_convs.\1.gn."),
    (_PD + r"level_embed$", r"pixel_decoder.level_encoding.weight"),
    (_ENC + r"self_attn\.", _OUT_ENC + "self_attn."),
    (_ENC + r"self_attn_layer_norm\.", _OUT_ENC + "norms.0."),
    (_ENC + r"fc1\.", _OUT_ENC + "ffn.layers.0.0."),
    (_ENC + r"fc2\.", _OUT_ENC + "ffn.layers.1."),
    (_ENC + r"final_layer_norm\.", _OUT_ENC + "norms.1."),
    (_PD + r"mask_projection\.", r"pixel_decoder.mask_feature."),
    (r"transformer_module\.queries_embedder\.", r"query_embed."),
    (r"transformer_module\.queries_features\.", r"query_feat."),
    (r"transformer_module\.level_embed\.", r"level_embed."),
    (r"transformer_module\.input_projections\.(\d+)\.", r"decoder_input_projs.\1."),
    (_DEC + r"self_attn\.out_proj\.", _OUT_DEC + "self_attn.attn.out_proj."),
    (_DEC + r"cross_attn\.", _OUT_DEC + "cross_attn.attn."),
    (_DEC + r"cross_attn_layer_norm\.", _OUT_DEC + "norms.0."),
    (_DEC + r"self_attn_layer_norm\.", _OUT_DEC + "norms.1."),
    (_DEC + r"final_layer_norm\.", _OUT_DEC + "norms.2."),
    (_DEC + r"fc1\.", _OUT_DEC + "ffn.layers.0.0."),
    (_DEC + r"fc2\.", _OUT_DEC + "ffn.layers.1."),
    (r"transformer_module\.decoder\.layernorm\.", r"transformer_decoder.post_norm."),
)
_FPN = re.compile(r"pixel_level_module\.decoder\.(adapter|layer)_(\d+)\.([01])\.(.+)")
_MASK_EMBED = re.compile(r"transformer_module\.decoder\.mask_predictor\.mask_embedder\.(\d+)\.0\.(.+)")
_SELF_QKV = re.compile(r"transformer_module\.decoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)")
_RESNET_RULES: tuple[tuple[str, str], ...] = (
    (r"^embedder\.embedder\.convolution\.", "conv1."),
    (r"^embedder\.embedder\.normalization\.", "bn1."),
)
_RESNET_BLOCK = re.compile(
    r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(shortcut|layer\.(\d+))\.(convolution|normalization)\.(.+)"
)


def _head_key(key: str) -> str:
    """A transformers head key (after `model.`) → ours (after `decode_head.`)."""
    match = _FPN.fullmatch(key)
    if match:
        kind, k, part, rest = match.groups()
        module = "lateral_convs" if kind == "adapter" else "output_convs"
        return f"pixel_decoder.{module}.{int(k) - 1}.{'conv' if part == '0' else 'gn'}.{rest}"
    match = _MASK_EMBED.fullmatch(key)
    if match:
        return f"mask_embed.{2 * int(match.group(1))}.{match.group(2)}"
    for pattern, repl in _HEAD_RULES:
        new, count = re.subn("^" + pattern, repl, key)
        if count:
            return new
    raise ValueError(f"transformers Mask2Former: no rule for the key model.{key}")


def resnet_state_dict_from_transformers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers `ResNetBackbone` state dict (`embedder.*`, `encoder.stages.*`) → timm's names."""
    out = {}
    for key, value in state.items():
        match = _RESNET_BLOCK.fullmatch(key)
        if match:
            stage, block, part, conv, kind, rest = match.groups()
            prefix = f"layer{int(stage) + 1}.{block}."
            if part == "shortcut":
                out[prefix + f"downsample.{0 if kind == 'convolution' else 1}.{rest}"] = value
            else:
                name = "conv" if kind == "convolution" else "bn"
                out[prefix + f"{name}{int(conv) + 1}.{rest}"] = value
            continue
        for pattern, repl in _RESNET_RULES:
            new, count = re.subn(pattern, repl, key)
            if count:
                out[new] = value
                break
        else:
            raise ValueError(f"transformers ResNet backbone: no rule for the key {key}")
    return out


def mask2former_state_dict_from_transformers(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """A transformers `Mask2FormerForUniversalSegmentation` state dict → our Segmentor's.

    The backbone (`model.pixel_level_module.encoder.*`) is converted for the backbone type in
    `config` (without one, told by its key names); every other key has a rule or raises (only
    `criterion.empty_weight` is left out).
    """
    encoder_prefix = _PIXEL + "encoder."
    encoder = {k[len(encoder_prefix) :]: v for k, v in state_dict.items() if k.startswith(encoder_prefix)}
    if config is not None:
        kind = (config.get("backbone_config") or {}).get("model_type", "swin")
    else:
        kind = "resnet" if any(k.startswith("embedder.embedder.") for k in encoder) else "swin"
    if kind == "resnet":
        backbone = {f"timm_model.{k}": v for k, v in resnet_state_dict_from_transformers(encoder).items()}
    elif kind == "swin":
        backbone = swin_state_dict_from_transformers(encoder)
    else:
        raise ValueError(f"transformers Mask2Former: backbone model_type {kind!r} unsupported (resnet, swin)")
    out = {f"backbone.{k}": v for k, v in backbone.items()}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key.startswith(encoder_prefix) or key == "criterion.empty_weight":
            continue
        if key.startswith("class_predictor."):
            out["decode_head.cls_embed." + key[len("class_predictor.") :]] = value
            continue
        if not key.startswith("model."):
            raise ValueError(f"not a transformers Mask2Former state dict; unknown key {key}")
        name = key[len("model.") :]
        match = _SELF_QKV.fullmatch(name)
        if match:
            layer, part, kind_ = match.groups()
            qkv.setdefault((layer, kind_), {})[part] = value
            continue
        out["decode_head." + _head_key(name)] = value
    for (layer, kind_), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"transformers Mask2Former decoder layer {layer}: q/k/v {kind_} incomplete")
        out[f"decode_head.transformer_decoder.layers.{layer}.self_attn.attn.in_proj_{kind_}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0
        )
    return out
