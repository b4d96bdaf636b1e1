"""An MMSegmentation config → a segaccel config (the model, its test pipeline, the data recipe,
the schedule and the runtime), without mmengine and without executing the file (`pyconfig.py`).

What maps to what (the full table is in docs/guides/coming-from-mmsegmentation.md):

- `model`: `EncoderDecoder` and its parts keep their names (our modules are MMSegmentation's);
  `mmpretrain.ConvNeXt` → `ConvNeXt`; every `SyncBN` → `BN` (the runner makes SyncBN on several GPUs);
  `init_cfg=dict(type='Pretrained', checkpoint=...)` and `model.pretrained` → `backbone.pretrained`;
  the preprocessor's `bgr_to_rgb`/`rgb_to_bgr` → `channel_order` (our images are RGB); MiT's
  `norm_cfg.eps` → `layer_norm_eps`. Options that are MMSegmentation's defaults and have no
  counterpart (`conv_cfg=None`, `dcn=None`, `with_cp=False`, ...) are dropped; any other value of
  them is an error.
- pipelines: `LoadImageFromFile` goes (rows are decoded images); `LoadAnnotations` stays where labels
  enter late (after Resize in test pipelines) and goes where they enter first; its
  `reduce_zero_label` becomes the dataset's. The other transforms keep their names and arguments.
- datasets: mapped by `type` to our recipes (`configs/_base_/datasets/*.yaml`: Hub sources with the
  same classes, palette, label handling); `data_root`/`data_prefix`/`ann_file` (MMSegmentation's folder
  layout) are not used.
- schedule and runtime: `optim_wrapper` (`AmpOptimWrapper` → `mixed_precision: fp16`, or `bf16` for
  `dtype='bfloat16'`), `param_scheduler` (iteration-based), `train_cfg`, `default_hooks.logger` and
  `.checkpoint`, `randomness.seed`, `load_from`.

Type names and arguments that survive the mapping are checked when the config is built
(`scripts/convert_mmseg_config.py` builds the model on the meta device and every transform); the
mapping itself raises `ConfigError` naming the key for what has no counterpart here.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from segaccel.config import load_config, to_plain
from segaccel.registry import ConfigError

from .pyconfig import read_mmseg_config

RECIPES_DIR = Path(__file__).resolve().parents[2] / "configs" / "_base_" / "datasets"
"""Our dataset recipes (in a checkout or an editable install)."""

DATASET_RECIPES = {
    "ADE20KDataset": "ade20k.yaml",
    "CityscapesDataset": "cityscapes.yaml",
    "PascalVOCDataset": "pascal_voc12.yaml",
    "PascalContextDataset59": "pascal_context_59.yaml",
    "COCOStuffDataset": "coco-stuff164k.yaml",
}
"""MMSegmentation dataset type → our recipe file."""

TYPE_RENAMES = {"mmpretrain.ConvNeXt": "ConvNeXt", "mmseg.EncoderDecoder": "EncoderDecoder"}

# Arguments MMSegmentation's classes take that ours do not, dropped when they hold these values.
_NO_OP_ARGS: dict[str, tuple[Any, ...]] = {
    "conv_cfg": (None, {"type": "Conv2d"}),
    "dcn": (None,),
    "plugins": (None,),
    "stage_with_dcn": ((False, False, False, False), [False, False, False, False]),
    "with_cp": (False,),
    "init_cfg": (None,),
    "use_mask": (False,),
    "train_cfg": ({}, None),
}
_KEEPS_WITH_CP = ("ResNet", "ResNetV1c", "ResNetV1d", "SwinTransformer", "ConvNeXt")
_OPTIMIZERS = ("SGD", "Adam", "AdamW")
_SCHEDULERS = ("LinearLR", "PolyLR", "CosineAnnealingLR", "StepLR", "MultiStepLR")
_TRANSFORM_NO_OPS = {"backend": ("cv2",), "clip_object_border": (True,), "resize_type": ("Resize",)}
_LOADERS = ("LoadImageFromFile", "LoadImageFromNDArray")
_FOLDER_LAYOUT = {"data_root", "data_prefix", "ann_file", "img_suffix", "seg_map_suffix"}
_CONSTRUCTORS = (None, "DefaultOptimWrapperConstructor", "LearningRateDecayOptimizerConstructor")
_LEFT_OUT = {"tta_model", "tta_pipeline", "visualizer", "vis_backends", "env_cfg", "log_processor"}


def convert_mmseg_config(
    path: str | os.PathLike, model_only: bool = False, recipes_dir: str | os.PathLike | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Read an MMSegmentation `.py` config (without executing it) and return our config and notes.

    The notes say what was left out or changed (to print beside the result). `model_only` converts
    just `model` (with its test pipeline), for checkpoints of models trained on datasets without a
    recipe here.
    """
    return mmseg_config_to_segaccel(read_mmseg_config(path), model_only=model_only, recipes_dir=recipes_dir)


def mmseg_config_to_segaccel(
    cfg: dict[str, Any], model_only: bool = False, recipes_dir: str | os.PathLike | None = None
) -> tuple[dict[str, Any], list[str]]:
    """An MMSegmentation config already read as plain data (`read_mmseg_config`) → ours and notes."""
    notes: list[str] = []
    if "model" not in cfg:
        if "data" in cfg or "img_norm_cfg" in cfg:
            raise ConfigError("an MMSegmentation 0.x config (data=..., img_norm_cfg): 1.x configs only")
        raise ConfigError("no `model` in this MMSegmentation config")
    model = convert_model(cfg["model"], notes)
    loader = cfg.get("test_dataloader") or cfg.get("val_dataloader") or {}
    test_pipeline = _get(loader, "dataset", "pipeline") or cfg.get("test_pipeline")
    if test_pipeline:
        model["test_pipeline"] = convert_pipeline(test_pipeline, "test_dataloader.dataset.pipeline", {})
    out: dict[str, Any] = {"model": model}
    if not model_only:
        out.update(convert_data(cfg, notes, Path(recipes_dir) if recipes_dir else RECIPES_DIR))
        out.update(convert_schedule(cfg, notes))
    return to_plain(out), notes


# --- model --------------------------------------------------------------------------------------
def convert_model(model: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """`model=dict(type='EncoderDecoder', ...)` → our `model:`."""
    model = copy.deepcopy(model)
    kind = TYPE_RENAMES.get(model.get("type"), model.get("type"))
    if kind != "EncoderDecoder":
        raise ConfigError(f"model.type: {model.get('type')!r} is not supported (EncoderDecoder only)")
    out: dict[str, Any] = {"type": "EncoderDecoder"}
    pretrained = model.pop("pretrained", None)
    for key, value in model.items():
        if key in ("type", "train_cfg") or (key == "init_cfg" and value is None):
            continue
        if key == "data_preprocessor":
            out[key] = convert_preprocessor(value, notes)
        elif key == "test_cfg":
            out[key] = _test_cfg(value)
        elif key in ("backbone", "neck", "decode_head", "auxiliary_head"):
            if isinstance(value, list):
                out[key] = [convert_part(v, f"model.{key}[{i}]", notes) for i, v in enumerate(value)]
            else:
                out[key] = None if value is None else convert_part(value, f"model.{key}", notes)
        else:
            raise ConfigError(f"model.{key}: no counterpart in segaccel's EncoderDecoder")
    if pretrained:
        kind = out["backbone"]["type"]
        out["backbone"].setdefault("pretrained", _pretrained(kind, pretrained, notes))
    return out


def _pretrained(kind: str, checkpoint: Any, notes: list[str]) -> Any:
    """MMSegmentation's MiT ImageNet files are NVIDIA's encoders, on the Hub as `nvidia/mit-b{n}`."""
    match = re.search(r"/mit_(b[0-5])[_.]", str(checkpoint)) if kind == "MixVisionTransformer" else None
    if match is None:
        return checkpoint
    notes.append(f"backbone.pretrained: {checkpoint} → nvidia/mit-{match.group(1)} (the same encoder)")
    return f"nvidia/mit-{match.group(1)}"


def convert_part(part: dict[str, Any], key: str, notes: list[str]) -> dict[str, Any]:
    """One registered part (backbone, neck, head, loss, sampler): renamed type, mapped arguments."""
    if not isinstance(part, dict) or "type" not in part:
        raise ConfigError(f"{key}: expected a dict with a `type`, got {part!r}")
    part = copy.deepcopy(part)
    kind = TYPE_RENAMES.get(part["type"], part["type"])
    if isinstance(kind, str) and kind.startswith("mmseg."):
        kind = kind[len("mmseg.") :]
    out: dict[str, Any] = {"type": kind}
    init_cfg = part.pop("init_cfg", None)
    if isinstance(init_cfg, dict) and init_cfg.get("type") == "Pretrained":
        out["pretrained"] = _pretrained(kind, init_cfg.get("checkpoint"), notes)
    elif init_cfg:
        notes.append(f"{key}.init_cfg {init_cfg!r} left out (parts use their own initialisation)")
    if kind == "MixVisionTransformer":
        _mit_args(part, key)
    for name, value in part.items():
        if name == "type":
            continue
        if name == "with_cp" and kind in _KEEPS_WITH_CP:
            out[name] = value
            continue
        if name in _NO_OP_ARGS:
            if _same(value, _NO_OP_ARGS[name]):
                continue
            raise ConfigError(f"{key}.{name}={value!r}: not supported in segaccel ({kind})")
        if name == "norm_cfg" and isinstance(value, dict):
            value = _norm_cfg(value)
        elif name in ("loss_decode", "sampler") and value is not None:
            if isinstance(value, list):
                value = [convert_part(v, f"{key}.{name}[{i}]", notes) for i, v in enumerate(value)]
            else:
                value = convert_part(value, f"{key}.{name}", notes)
        elif name == "class_weight" and isinstance(value, str):
            raise ConfigError(f"{key}.class_weight={value!r}: give the weights as a list (no file is read)")
        out[name] = value
    return out


def _mit_args(part: dict[str, Any], key: str) -> None:
    """MMSegmentation's MiT arguments → ours: `norm_cfg` LN eps → `layer_norm_eps`; GELU is ours."""
    norm = part.pop("norm_cfg", None)
    if norm is not None:
        if norm.get("type") != "LN":
            raise ConfigError(f"{key}.norm_cfg: MiT here uses LayerNorm, got {norm!r}")
        part["layer_norm_eps"] = norm.get("eps", 1e-6)
    act = part.pop("act_cfg", None)
    if act is not None and act != {"type": "GELU"}:
        raise ConfigError(f"{key}.act_cfg: MiT here uses GELU, got {act!r}")


def convert_preprocessor(pre: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """MMSegmentation's `SegDataPreProcessor` → ours (images arrive RGB here, BGR there)."""
    pre = dict(pre)
    kind = pre.pop("type", "SegDataPreProcessor")
    if kind != "SegDataPreProcessor":
        raise ConfigError(f"model.data_preprocessor.type: {kind!r} (SegDataPreProcessor only)")
    flips = bool(pre.pop("bgr_to_rgb", False)) or bool(pre.pop("rgb_to_bgr", False))
    # MMSegmentation normalises only when given mean/std: say so explicitly (ours defaults to ImageNet's)
    out: dict[str, Any] = {"type": "SegDataPreProcessor"}
    out["mean"], out["std"] = pre.pop("mean", None), pre.pop("std", None)
    for key in ("size", "size_divisor", "pad_val", "seg_pad_val", "test_cfg"):
        if pre.get(key) is not None:
            out[key] = pre.pop(key)
        else:
            pre.pop(key, None)
    if not flips:  # MMSegmentation then feeds the network BGR (as cv2 reads it)
        out["channel_order"] = "bgr"
        notes.append("model.data_preprocessor: no bgr_to_rgb, so the network takes BGR (channel_order: bgr)")
    batch_augments = pre.pop("batch_augments", None)
    if batch_augments is not None:
        out["batch_augments"] = batch_augments
    pre.pop("non_blocking", None)
    if pre:
        raise ConfigError(f"model.data_preprocessor: {sorted(pre)} have no counterpart in segaccel")
    return out


def _test_cfg(test_cfg: dict[str, Any] | None) -> dict[str, Any]:
    test_cfg = dict(test_cfg or {"mode": "whole"})
    mode = test_cfg.pop("mode", "whole")
    out: dict[str, Any] = {"mode": mode}
    if mode == "slide":
        out["crop_size"] = test_cfg.pop("crop_size", None)
        out["stride"] = test_cfg.pop("stride", None)
    if test_cfg:
        raise ConfigError(f"model.test_cfg: {sorted(test_cfg)} have no counterpart in segaccel")
    return out


def _norm_cfg(norm: dict[str, Any]) -> dict[str, Any]:
    norm = dict(norm)
    if norm.get("type") in ("SyncBN", "MMSyncBN"):
        norm["type"] = "BN"  # the runner turns BN into SyncBN when it trains on several GPUs
    return norm


def _same(value: Any, choices: tuple[Any, ...]) -> bool:
    return any(value == c or (isinstance(value, tuple) and list(value) == c) for c in choices)


# --- pipelines ----------------------------------------------------------------------------------
def convert_pipeline(steps: list[dict[str, Any]], key: str, found: dict[str, Any]) -> list[dict[str, Any]]:
    """An MMSegmentation pipeline → ours; `found` receives `reduce_zero_label` from LoadAnnotations."""
    out: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or "type" not in step:
            raise ConfigError(f"{key}.{i}: expected a transform dict with a `type`, got {step!r}")
        step = dict(step)
        kind = step.pop("type")
        if kind in _LOADERS:
            continue
        if kind == "TestTimeAug":
            raise ConfigError(f"{key}.{i}: TestTimeAug: use SegTTAModel (model TTA) instead of TTA pipelines")
        if kind == "LoadAnnotations":
            if step.get("reduce_zero_label") is not None:
                found["reduce_zero_label"] = bool(step.pop("reduce_zero_label"))
            for name in ("backend_args", "imdecode_backend"):
                step.pop(name, None)
            if step:
                raise ConfigError(f"{key}.{i}: LoadAnnotations {sorted(step)}: no counterpart in segaccel")
            if out:  # labels enter after transforms that must not touch them (test pipelines)
                out.append({"type": "LoadAnnotations"})
            continue
        for name, no_op in _TRANSFORM_NO_OPS.items():
            if name in step:
                if step[name] not in no_op:
                    raise ConfigError(f"{key}.{i}: {kind}.{name}={step[name]!r} is not supported in segaccel")
                del step[name]
        out.append({"type": kind, **step})
    return out


# --- data ---------------------------------------------------------------------------------------
def convert_data(cfg: dict[str, Any], notes: list[str], recipes_dir: Path) -> dict[str, Any]:
    """The three dataloaders (our recipe for the dataset type, MMSegmentation's pipelines and batch
    sizes) and the evaluators."""
    out: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        key = f"{split}_dataloader"
        loader = cfg.get(key)
        if not loader:
            continue
        dataset = dict(loader.get("dataset") or {})
        kind = dataset.get("type")
        if kind not in DATASET_RECIPES:
            raise ConfigError(
                f"{key}.dataset.type: no segaccel recipe for MMSegmentation's {kind!r} (recipes: "
                f"{', '.join(DATASET_RECIPES)}); convert with --model-only and write the dataset part by hand"
            )
        recipe_file = recipes_dir / DATASET_RECIPES[kind]
        if not recipe_file.is_file():
            raise FileNotFoundError(f"{key}: our recipe {recipe_file} is missing (pass recipes_dir)")
        recipe = load_config(recipe_file)
        ours = copy.deepcopy(_get(recipe, key, "dataset") or _get(recipe, "val_dataloader", "dataset") or {})
        found: dict[str, Any] = {}
        ours["pipeline"] = convert_pipeline(dataset.get("pipeline") or [], f"{key}.dataset.pipeline", found)
        if "reduce_zero_label" in dataset:
            found.setdefault("reduce_zero_label", bool(dataset["reduce_zero_label"]))
        if "reduce_zero_label" in found and found["reduce_zero_label"] != ours.get("reduce_zero_label"):
            notes.append(f"{key}.dataset.reduce_zero_label: {found['reduce_zero_label']} (MMSegmentation's)")
            ours["reduce_zero_label"] = found["reduce_zero_label"]
        classes = _get(dataset, "metainfo", "classes")
        if classes:
            ours["id2label"] = list(classes)
        dropped = sorted(set(dataset) & _FOLDER_LAYOUT)
        if dropped:
            notes.append(f"{key}.dataset: {dropped} not used (segaccel reads {recipe_file.name}'s source)")
        out[key] = {
            "batch_size": loader.get("batch_size", 1),
            "num_workers": loader.get("num_workers", 0),
            "dataset": ours,
        }
    for key in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(key)
        if evaluator:
            evaluator = dict(evaluator)
            if evaluator.get("type") != "IoUMetric":
                raise ConfigError(f"{key}.type: {evaluator.get('type')!r} (IoUMetric only)")
            for name in ("output_dir", "format_only", "keep_results"):
                evaluator.pop(name, None)
            out[key] = evaluator
    return out


# --- schedule and runtime -----------------------------------------------------------------------
def convert_schedule(cfg: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """`optim_wrapper`, `param_scheduler`, `train_cfg`/`val_cfg`/`test_cfg`, hooks, seed, load_from."""
    out: dict[str, Any] = {}
    wrapper = copy.deepcopy(cfg.get("optim_wrapper") or {})
    if wrapper:
        kind = wrapper.pop("type", "OptimWrapper")
        if kind == "AmpOptimWrapper":
            out["mixed_precision"] = "bf16" if str(wrapper.pop("dtype", "")).endswith("bfloat16") else "fp16"
            wrapper.pop("loss_scale", None)
        elif kind != "OptimWrapper":
            raise ConfigError(f"optim_wrapper.type: {kind!r} (OptimWrapper or AmpOptimWrapper)")
        optimizer = wrapper.get("optimizer") or {}
        if optimizer.get("type") not in _OPTIMIZERS:
            raise ConfigError(f"optim_wrapper.optimizer.type: {optimizer.get('type')!r} ({_OPTIMIZERS})")
        constructor = wrapper.pop("constructor", None)
        if constructor not in _CONSTRUCTORS:
            raise ConfigError(f"optim_wrapper.constructor: {constructor!r} has no counterpart in segaccel")
        wrapper.setdefault("clip_grad", None)
        wrapper.setdefault("accumulative_counts", 1)
        out["optim_wrapper"] = wrapper
    schedulers = cfg.get("param_scheduler") or []
    schedulers = [schedulers] if isinstance(schedulers, dict) else schedulers
    converted = []
    for i, sched in enumerate(copy.deepcopy(schedulers)):
        if sched.pop("by_epoch", False):
            raise ConfigError(f"param_scheduler.{i}: by_epoch=True; segaccel schedules count iterations")
        if sched.get("type") not in _SCHEDULERS:
            raise ConfigError(f"param_scheduler.{i}.type: {sched.get('type')!r} (one of {_SCHEDULERS})")
        converted.append(sched)
    if converted:
        out["param_scheduler"] = converted
    train_cfg = dict(cfg.get("train_cfg") or {})
    if train_cfg:
        if train_cfg.get("type") != "IterBasedTrainLoop":
            raise ConfigError(f"train_cfg.type: {train_cfg.get('type')!r} (IterBasedTrainLoop only)")
        out["train_cfg"] = train_cfg
        out["val_cfg"] = {"type": "ValLoop"}
        out["test_cfg"] = {"type": "TestLoop"}
    hooks = cfg.get("default_hooks") or {}
    ours: dict[str, Any] = {}
    if "logger" in hooks:
        ours["logger"] = {"interval": hooks["logger"].get("interval", 50)}
    if "checkpoint" in hooks:
        ckpt = hooks["checkpoint"]
        ours["checkpoint"] = {k: ckpt[k] for k in ("interval", "max_keep_ckpts", "save_best") if k in ckpt}
    if ours:
        out["default_hooks"] = ours
    seed = _get(cfg, "randomness", "seed")
    if seed is not None:
        out["seed"] = seed
    if cfg.get("load_from"):
        out["load_from"] = cfg["load_from"]
    left = sorted(set(cfg) & _LEFT_OUT)
    if left:
        notes.append(f"left out (segaccel has its own): {left}")
    return out


def _get(cfg: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(cfg, dict) or key not in cfg:
            return None
        cfg = cfg[key]
    return cfg
