"""Building a run's parts from its resolved config: a split's dataset, the model's `config.json`
content, the evaluator. The Runner calls these and keeps what they build.
"""

from __future__ import annotations

import copy
from typing import Any

import huggingface_hub.constants

from segaccel.config import get_path, to_plain
from segaccel.data import build_dataset
from segaccel.data.crop_check import check_crop_size
from segaccel.data.streaming import SegStreamDataset
from segaccel.registry import METRICS, ConfigError
from segaccel.visualization import get_palette


def build_split(cfg: dict[str, Any], loader_key: str, accelerator: Any, seed: int) -> Any:
    """The `SegDataset` (or, streamed, `SegStreamDataset`) of `<loader_key>.dataset`.

    The main process prepares data first; a streamed split is sharded across processes here, once
    (the dataloaders are never prepared by Accelerate). Errors name the config key: a dataset that
    cannot be loaded (`<loader_key>.dataset.path`), an empty split, and, for training, a crop
    larger than every image with nothing padding up to it.
    """
    dataset_cfg = get_path(cfg, f"{loader_key}.dataset")
    if not isinstance(dataset_cfg, dict):
        raise ConfigError(f"{loader_key}.dataset: missing (a mapping with `path`, `split`, `pipeline`)")
    dataset_cfg = copy.deepcopy(dataset_cfg)
    split = dataset_cfg.pop("split", "train" if loader_key.startswith("train") else "validation")
    training = loader_key.startswith("train")
    with accelerator.main_process_first():
        try:
            dataset = build_dataset(
                dataset_cfg,
                split,
                seed=seed,
                num_classes=get_path(cfg, "model.decode_head.num_classes"),
                rank=accelerator.process_index,
                world_size=accelerator.num_processes,
                training=training,
                key=f"{loader_key}.dataset",
            )
        except (ConnectionError, FileNotFoundError) as exc:  # a Hub id or folder that is not there
            error = ConnectionError if isinstance(exc, ConnectionError) else FileNotFoundError
            raise error(
                f"{loader_key}.dataset.path: cannot load {dataset_cfg.get('path')!r}: {exc}" + _offline_hint()
            ) from exc
    if training:  # a crop larger than every image, with nothing padding up to it: say so now
        check_crop_size(dataset, f"{loader_key}.dataset", get_path(cfg, "model.data_preprocessor.size"))
    if not isinstance(dataset, SegStreamDataset) and len(dataset) == 0:
        raise ValueError(f"{loader_key}.dataset: split {split!r} of {dataset_cfg.get('path')!r} is empty")
    return dataset


def model_config(cfg: dict[str, Any], dataset_id2label: dict[int, str] | None = None) -> dict[str, Any]:
    """`cfg.model` completed with what travels in `config.json`: labels, palette, test pipeline.

    Labels come from `model.id2label`, else from the dataset (`dataset_id2label`); the palette from
    `model.palette`, the training dataset's `palette`, else a generated one; the test pipeline from
    the test (else validation) dataset.
    """
    model_cfg = copy.deepcopy(cfg.get("model") or {})
    if not model_cfg:
        raise ConfigError("model: missing")
    id2label = model_cfg.get("id2label") or dataset_id2label
    num_classes = get_path(model_cfg, "decode_head.num_classes")
    if id2label:
        id2label = {int(k): str(v) for k, v in id2label.items()}
        if (
            num_classes is not None
            and num_classes != len(id2label)
            and get_path(model_cfg, "decode_head.out_channels") != 1
        ):
            raise ConfigError(
                f"model.decode_head.num_classes is {num_classes} but id2label has {len(id2label)} "
                f"classes ({list(id2label.values())[:6]}...)"
            )
        model_cfg["id2label"] = id2label
    if num_classes is None and get_path(model_cfg, "decode_head") is not None:  # `null`: from the data
        if not id2label:
            raise ConfigError(
                "model.decode_head.num_classes is null and the dataset names no classes (no id2label.json, "
                "no ClassLabel feature): set dataset.id2label (a JSON file or a list of names) or "
                "model.decode_head.num_classes"
            )
        num_classes = len(id2label)
        _set_num_classes(model_cfg, num_classes)
    n = num_classes or (len(id2label) if id2label else 2)
    palette = model_cfg.get("palette") or get_path(cfg, "train_dataloader.dataset.palette")
    model_cfg["palette"] = palette or get_palette(n)
    if not model_cfg.get("test_pipeline"):
        for key in ("test_dataloader", "val_dataloader"):
            pipeline = get_path(cfg, f"{key}.dataset.pipeline")
            if pipeline:
                model_cfg["test_pipeline"] = copy.deepcopy(pipeline)
                break
    return to_plain(model_cfg)


def _set_num_classes(model_cfg: dict[str, Any], num_classes: int) -> None:
    """Heads whose `num_classes` is null take the data's class count."""
    aux = model_cfg.get("auxiliary_head")
    for head in [model_cfg.get("decode_head"), *(aux if isinstance(aux, list) else [aux])]:
        if isinstance(head, dict) and head.get("num_classes", 0) is None:
            head["num_classes"] = num_classes


def build_evaluator(cfg: dict[str, Any], key: str, model: Any) -> Any:
    """The metric `cfg[key]` describes (default `IoUMetric`), sized to `model`'s classes and names."""
    evaluator_cfg = copy.deepcopy(cfg.get(key) or {"type": "IoUMetric"})
    evaluator_cfg.setdefault("num_classes", model.num_classes)
    if model.id2label:
        evaluator_cfg.setdefault("class_names", [model.id2label[i] for i in sorted(model.id2label)])
    return METRICS.build(evaluator_cfg, key=key)


def _offline_hint() -> str:
    """Why a Hub dataset may be missing when offline mode is on."""
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return " (offline mode, HF_HUB_OFFLINE=1: only datasets already in the local cache can be loaded)"
    return ""
