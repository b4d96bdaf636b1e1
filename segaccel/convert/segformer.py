"""transformers' SegFormer ↔ segaccel: configs and state dicts, as pure functions on dicts.

transformers checkpoints on the Hub (`nvidia/segformer-b0-finetuned-ade-512-512`, the ImageNet
encoders `nvidia/mit-b0` ... `nvidia/mit-b5`) store the encoder as `segformer.encoder.*` (or
`encoder.*` for a bare `SegformerModel`) and the head as `decode_head.*`. Our MiT follows
MMSegmentation's names instead; the differences are names only, except two:

    attention.self.{query,key,value}     concatenated (in that order) into attn.attn.in_proj_{weight,bias}
    mlp.dense1 / mlp.dense2              Linear there, 1x1 conv here: weight[..., None, None]

The decode head keeps its names (`linear_c.{i}.proj`, `linear_fuse`, `batch_norm`) except
`classifier` → `conv_seg`; it is our `SegformerHead(projection="linear")`. transformers' MiT
LayerNorms use eps 1e-5 (MMSegmentation's 1e-6), so converted backbones get `layer_norm_eps=1e-5`.

transformers 5 renames modules in memory (`stages.{i}.blocks`, `q_proj`, `fc1`, ...) but saves the
names above; both are accepted here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

TRANSFORMERS_LAYER_NORM_EPS = 1e-5
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # transformers' SegformerImageProcessor defaults (0-1 scale)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = {"height": 512, "width": 512}

# transformers 5 in-memory names → the names its checkpoints use (applied in this order)
_V5_TO_SAVED = (
    (r"(^|\.)stages\.(\d+)\.patch_embeddings\.", r"\1encoder.patch_embeddings.\2."),
    (r"(^|\.)stages\.(\d+)\.blocks\.", r"\1encoder.block.\2."),
    (r"(^|\.)stages\.(\d+)\.layer_norm\.", r"\1encoder.layer_norm.\2."),
    (r"\.attention\.q_proj\.", ".attention.self.query."),
    (r"\.attention\.k_proj\.", ".attention.self.key."),
    (r"\.attention\.v_proj\.", ".attention.self.value."),
    (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attention.self.sr."),
    (r"\.attention\.sequence_reduction\.layer_norm\.", ".attention.self.layer_norm."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".mlp.dense1."),
    (r"\.mlp\.fc2\.", ".mlp.dense2."),
    (r"\.layernorm_before\.", ".layer_norm_1."),
    (r"\.layernorm_after\.", ".layer_norm_2."),
    (r"^decode_head\.linear_projections\.", "decode_head.linear_c."),
)

# saved transformers encoder names (after the `encoder.` prefix) ↔ our MiT names, as name templates
# (`{i}` a stage, `{j}` a block, `{p}` a parameter); q/k/v are concatenated separately (_QKV)
_ENCODER_RULES = (
    ("patch_embeddings.{i}.proj.{p}", "layers.{i}.0.projection.{p}"),
    ("patch_embeddings.{i}.layer_norm.{p}", "layers.{i}.0.norm.{p}"),
    ("block.{i}.{j}.layer_norm_1.{p}", "layers.{i}.1.{j}.norm1.{p}"),
    ("block.{i}.{j}.layer_norm_2.{p}", "layers.{i}.1.{j}.norm2.{p}"),
    ("block.{i}.{j}.attention.self.sr.{p}", "layers.{i}.1.{j}.attn.sr.{p}"),
    ("block.{i}.{j}.attention.self.layer_norm.{p}", "layers.{i}.1.{j}.attn.norm.{p}"),
    ("block.{i}.{j}.attention.output.dense.{p}", "layers.{i}.1.{j}.attn.attn.out_proj.{p}"),
    ("block.{i}.{j}.mlp.dense1.{p}", "layers.{i}.1.{j}.ffn.layers.0.{p}"),
    ("block.{i}.{j}.mlp.dwconv.dwconv.{p}", "layers.{i}.1.{j}.ffn.layers.1.{p}"),
    ("block.{i}.{j}.mlp.dense2.{p}", "layers.{i}.1.{j}.ffn.layers.4.{p}"),
    ("layer_norm.{i}.{p}", "layers.{i}.2.{p}"),
)
_QKV = re.compile(r"block\.(\d+)\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)")
_HEAD_RULES = (
    ("linear_c.{i}.proj.{p}", "linear_c.{i}.proj.{p}"),
    ("linear_fuse.{p}", "linear_fuse.{p}"),
    ("batch_norm.{p}", "batch_norm.{p}"),
    ("classifier.{p}", "conv_seg.{p}"),
)
_FFN_LINEAR = re.compile(r"\.ffn\.layers\.[04]\.weight$")


# --- configs -----------------------------------------------------------------------------------------
def is_transformers_segformer(config: Mapping[str, Any] | None) -> bool:
    """Whether a `config.json` was written by transformers for a SegFormer (`model_type: segformer`)."""
    return isinstance(config, Mapping) and config.get("model_type") == "segformer"


def mit_config_from_transformers(config: Mapping[str, Any]) -> dict[str, Any]:
    """Our `MixVisionTransformer` arguments for a transformers `SegformerConfig` dict."""
    _require(config, ("hidden_sizes", "num_attention_heads", "depths"))
    hidden_sizes = [int(h) for h in config["hidden_sizes"]]
    heads = [int(h) for h in config["num_attention_heads"]]
    num_stages = int(config.get("num_encoder_blocks", len(hidden_sizes)))
    embed_dims = hidden_sizes[0] // heads[0]
    if any(h != embed_dims * n for h, n in zip(hidden_sizes, heads)):
        raise ValueError(
            f"transformers SegFormer config: hidden_sizes {hidden_sizes} are not one head width times "
            f"num_attention_heads {heads}; our MiT needs hidden_sizes[i] = embed_dims * num_heads[i]"
        )
    mlp_ratios = {int(r) for r in config.get("mlp_ratios", [4] * num_stages)}
    if len(mlp_ratios) != 1:
        raise ValueError(f"transformers SegFormer config: mlp_ratios {sorted(mlp_ratios)} differ per stage")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"transformers SegFormer config: hidden_act {config['hidden_act']!r} (only gelu)")
    return {
        "type": "MixVisionTransformer",
        "in_channels": int(config.get("num_channels", 3)),
        "embed_dims": embed_dims,
        "num_stages": num_stages,
        "num_layers": [int(d) for d in config["depths"]],
        "num_heads": heads,
        "patch_sizes": [int(p) for p in config.get("patch_sizes", [7, 3, 3, 3])],
        "strides": [int(s) for s in config.get("strides", [4, 2, 2, 2])],
        "sr_ratios": [int(s) for s in config.get("sr_ratios", [8, 4, 2, 1])],
        "out_indices": list(range(num_stages)),
        "mlp_ratio": mlp_ratios.pop(),
        "qkv_bias": True,
        "drop_rate": float(config.get("hidden_dropout_prob", 0.0)),
        "attn_drop_rate": float(config.get("attention_probs_dropout_prob", 0.0)),
        "drop_path_rate": float(config.get("drop_path_rate", 0.1)),
        "layer_norm_eps": TRANSFORMERS_LAYER_NORM_EPS,
    }


def segformer_config_from_transformers(
    config: Mapping[str, Any], preprocessor_config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`Segmentor` arguments for a transformers `SegformerForSemanticSegmentation` config dict.

    The head is `SegformerHead(projection="linear")`; class names come from `id2label`. The
    normalisation and the test-time resize come from `preprocessor_config` (transformers'
    `preprocessor_config.json`; its defaults when None): `image_mean`/`image_std` on the 0-1 scale
    become our 0-255 `mean`/`std`, and `size` becomes `Resize(scale=(w, h), keep_ratio=False)`.
    """
    backbone = mit_config_from_transformers(config)
    id2label = config.get("id2label")
    num_classes = len(id2label) if id2label else int(config.get("num_labels", 2))
    decode_head = {
        "type": "SegformerHead",
        "projection": "linear",
        "in_channels": [int(h) for h in config["hidden_sizes"]],
        "in_index": list(range(backbone["num_stages"])),
        "channels": int(config.get("decoder_hidden_size", 256)),
        "num_classes": num_classes,
        "dropout_ratio": float(config.get("classifier_dropout_prob", 0.1)),
        "ignore_index": int(config.get("semantic_loss_ignore_index", 255)),
        "norm_cfg": {"type": "BN", "requires_grad": True},
        "align_corners": False,
        "loss_decode": {"type": "CrossEntropyLoss", "use_sigmoid": False, "loss_weight": 1.0},
    }
    data_preprocessor, test_pipeline = _preprocessing_from_transformers(preprocessor_config or {})
    return {
        "backbone": backbone,
        "decode_head": decode_head,
        "data_preprocessor": data_preprocessor,
        "test_cfg": {"mode": "whole"},
        "id2label": {str(k): str(v) for k, v in id2label.items()} if id2label else None,
        "test_pipeline": test_pipeline,
    }


def _preprocessing_from_transformers(pre: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict] | None]:
    rescale = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
    if pre.get("do_normalize", True):
        mean = [round(float(m) / rescale, 6) for m in pre.get("image_mean", IMAGENET_MEAN)]
        std = [round(float(s) / rescale, 6) for s in pre.get("image_std", IMAGENET_STD)]
    else:
        mean, std = [0.0, 0.0, 0.0], [1.0 / rescale] * 3
    data_preprocessor = {"type": "SegDataPreProcessor", "mean": mean, "std": std}
    test_pipeline = None
    if pre.get("do_resize", True):
        size = pre.get("size", DEFAULT_SIZE)
        if isinstance(size, Mapping) and {"height", "width"} <= set(size):
            test_pipeline = [
                {"type": "Resize", "scale": [int(size["width"]), int(size["height"])], "keep_ratio": False}
            ]
        else:
            raise ValueError(f"transformers preprocessor_config: size {size!r} is not {{height, width}}")
    return data_preprocessor, test_pipeline


def segformer_config_to_transformers(config: Mapping[str, Any]) -> dict[str, Any]:
    """A transformers `SegformerConfig` dict for one of our SegFormer configs (MiT + linear head).

    The inverse of `segformer_config_from_transformers` for the architecture and class names.
    """
    backbone, head = config["backbone"], config["decode_head"]
    if backbone.get("type") != "MixVisionTransformer" or head.get("type") != "SegformerHead":
        raise ValueError("only a MixVisionTransformer + SegformerHead model has a transformers twin")
    if head.get("projection") != "linear":
        raise ValueError('only SegformerHead(projection="linear") has transformers\' layout')
    heads = list(backbone["num_heads"])
    id2label = config.get("id2label") or {i: f"LABEL_{i}" for i in range(head["num_classes"])}
    return {
        "model_type": "segformer",
        "architectures": ["SegformerForSemanticSegmentation"],
        "num_channels": backbone.get("in_channels", 3),
        "num_encoder_blocks": backbone.get("num_stages", len(heads)),
        "depths": list(backbone["num_layers"]),
        "sr_ratios": list(backbone["sr_ratios"]),
        "hidden_sizes": [backbone["embed_dims"] * h for h in heads],
        "patch_sizes": list(backbone["patch_sizes"]),
        "strides": list(backbone["strides"]),
        "num_attention_heads": heads,
        "mlp_ratios": [backbone.get("mlp_ratio", 4)] * len(heads),
        "hidden_act": "gelu",
        "hidden_dropout_prob": backbone.get("drop_rate", 0.0),
        "attention_probs_dropout_prob": backbone.get("attn_drop_rate", 0.0),
        "classifier_dropout_prob": head.get("dropout_ratio", 0.1),
        "drop_path_rate": backbone.get("drop_path_rate", 0.1),
        "decoder_hidden_size": head["channels"],
        "semantic_loss_ignore_index": head.get("ignore_index", 255),
        "reshape_last_stage": True,
        "id2label": {str(k): v for k, v in id2label.items()},
        "label2id": {v: int(k) for k, v in id2label.items()},
    }


# --- state dicts -------------------------------------------------------------------------------------
def segformer_state_dict_from_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers `SegformerForSemanticSegmentation` state dict → our Segmentor's.

    Encoder keys become `backbone.*`, decode-head keys `decode_head.*`. Any other key raises
    (nothing is dropped silently).
    """
    state = _saved_names(state_dict)
    encoder = {
        k[len("segformer.encoder.") :]: v for k, v in state.items() if k.startswith("segformer.encoder.")
    }
    head = {k[len("decode_head.") :]: v for k, v in state.items() if k.startswith("decode_head.")}
    others = sorted(k for k in state if not k.startswith(("segformer.encoder.", "decode_head.")))
    if others:
        raise ValueError(
            f"not a transformers SegFormer segmentation state dict; unknown keys: {_few(others)}"
        )
    out = {f"backbone.{k}": v for k, v in _encoder_from_transformers(encoder).items()}
    for key, value in head.items():
        out[f"decode_head.{_rename(key, _HEAD_RULES, 'decode_head.')}"] = value
    return out


def mit_state_dict_from_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder of any transformers SegFormer state dict → our `MixVisionTransformer` state dict.

    Accepts `SegformerModel` (`encoder.*`), `SegformerForImageClassification` (the ImageNet repos
    `nvidia/mit-b*`: `segformer.encoder.*`, its `classifier.*` is left out) and
    `SegformerForSemanticSegmentation` (its `decode_head.*` is left out).
    """
    state = _saved_names(state_dict)
    for prefix in ("segformer.encoder.", "encoder."):
        encoder = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if encoder:
            return _encoder_from_transformers(encoder)
    raise ValueError(
        "no transformers SegFormer encoder weights (segformer.encoder.* or encoder.*) in "
        f"{_few(sorted(state))}"
    )


def segformer_state_dict_to_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our SegFormer state dict (MiT + `SegformerHead(projection="linear")`) → transformers' saved names."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            name = key[len("backbone.") :]
            match = re.fullmatch(r"layers\.(\d+)\.1\.(\d+)\.attn\.attn\.in_proj_(weight|bias)", name)
            if match:
                i, j, kind = match.groups()
                for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                    out[f"segformer.encoder.block.{i}.{j}.attention.self.{part}.{kind}"] = chunk.clone()
                continue
            new = _apply(name, _ENCODER_RULES, backwards=True)
            if new is None:
                unknown.append(key)
                continue
            if _FFN_LINEAR.search("." + name):
                value = value[:, :, 0, 0]
            out[f"segformer.encoder.{new}"] = value
        elif key.startswith("decode_head."):
            new = _apply(key[len("decode_head.") :], _HEAD_RULES, backwards=True)
            if new is None:
                unknown.append(key)
                continue
            out[f"decode_head.{new}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"keys with no transformers SegFormer counterpart: {_few(sorted(unknown))}")
    return out


def _encoder_from_transformers(encoder: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    for key, value in encoder.items():
        match = _QKV.fullmatch(key)
        if match:
            i, j, part, kind = match.groups()
            qkv.setdefault((i, j, kind), {})[part] = value
            continue
        new = _rename(key, _ENCODER_RULES, "encoder.")
        if _FFN_LINEAR.search("." + new):
            value = value[:, :, None, None]
        out[new] = value
    for (i, j, kind), parts in sorted(qkv.items()):
        missing = [p for p in ("query", "key", "value") if p not in parts]
        if missing:
            raise ValueError(f"encoder block {i}.{j}: attention {kind} has no {', '.join(missing)}")
        out[f"layers.{i}.1.{j}.attn.attn.in_proj_{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0
        )
    return out


def _saved_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5's in-memory names → its saved names (saved names pass unchanged)."""
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in _V5_TO_SAVED:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def _template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name in ("i", "j"):
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>\\d+)")
    pattern = pattern.replace(re.escape("{p}"), "(?P<p>[A-Za-z_]+)")
    return re.compile(pattern)


def _apply(key: str, rules: tuple[tuple[str, str], ...], backwards: bool = False) -> str | None:
    """The first rule whose source template matches `key`, filled into the target; None if none."""
    for theirs, ours in rules:
        source, target = (ours, theirs) if backwards else (theirs, ours)
        match = _template_regex(source).fullmatch(key)
        if match:
            return target.format(**match.groupdict())
    return None


def _rename(key: str, rules: tuple[tuple[str, str], ...], where: str) -> str:
    new = _apply(key, rules)
    if new is None:
        raise ValueError(f"transformers SegFormer: no rule for the key {where}{key}")
    return new


def _require(config: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in config]
    if missing:
        raise ValueError(f"transformers SegFormer config: missing {', '.join(missing)}")


def _few(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")
