"""One dataset for a whole run: `--dataset PATH_OR_HUB_ID` (or a config's top-level `dataset:`) points
the train, validation and test loaders at one source.

    cfg = use_dataset(load_config("configs/quickstart.yaml"), "data/my_parquet_folder")

Every `*_dataloader.dataset` keeps its `pipeline` and processing options (`KEPT_KEYS`) and loses
what described the old source (`path`, `name`, `data_files`, `synthetic`, columns, labels,
palette...), so a saved config holds only settings that apply. The loaders read the source's own
splits: `train`; its validation split (`validation`, `val` or `valid`; none: a seeded part of
`train` held out, `validation_split`); `test` when the source has one, else the validation split —
never another dataset. Columns are found by name (`segaccel.data.rows`) unless the `dataset:`
block names them (`image_column`, `label_column`): that block is where a config, or a
`dataset.<key>=value` override, sets options for the new source on purpose (`reduce_zero_label`,
`id2label`, `streaming`, ...).

Classes come from the source when the block gives none (`id2label`): an `id2label.json` in the
folder or Hub repo, or a `ClassLabel` feature; the model's heads are resized to their count (and
any `model.id2label`/`palette` of the old dataset dropped). A source whose classes cannot be read
before loading leaves `num_classes: null`: the run takes them from the loaded training split.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import datasets

from segaccel.data.classes import dataset_id2label
from segaccel.data.rows import LABEL_COLUMNS
from segaccel.data.sources import SYNTHETIC_PATH, VALIDATION_SPLITS, _is_saved_to_disk
from segaccel.registry import ConfigError

logger = logging.getLogger(__name__)

LOADER_KEYS = ("train_dataloader", "val_dataloader", "test_dataloader")
# what a loader's dataset keeps when it is pointed at another source: how samples are processed
KEPT_KEYS = ("pipeline", "ignore_index", "skip_bad_samples", "shuffle_buffer_size")
# `datasets.load_dataset` arguments that name the source (and go with it)
SOURCE_KEYS = ("path", "name", "data_files", "data_dir", "revision", "streaming", "trust_remote_code")
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "eval": "validation"}


def canonical_split(name: str) -> str:
    """A split name as `datasets` writes it: `val`/`valid` → `validation`; others unchanged."""
    return SPLIT_ALIASES.get(name, name)


def use_dataset(cfg: dict[str, Any], source: str | None = None, resize_model: bool = True) -> dict[str, Any]:
    """A new config whose loaders all read `source` (or the config's top-level `dataset.path`).

    The top-level `dataset:` block (options for the source, e.g. `image_column`) is folded into
    every loader and removed. Without a source and without a block the config is returned as is.
    `resize_model=False` (evaluating a trained model) leaves `model` untouched.
    """
    cfg = copy.deepcopy(cfg)
    block = cfg.pop("dataset", None)
    if block is not None and not isinstance(block, dict):
        raise ConfigError(
            f"dataset: a mapping of options for the source (path, image_column, ...), got {block!r}"
        )
    options = dict(block or {})
    if source:
        options["path"] = str(source)
    if not options:
        return cfg
    if not options.get("path"):
        raise ConfigError(
            f"dataset: no `path` (give --dataset PATH_OR_HUB_ID or dataset.path); options {options}"
        )
    options.pop("split", None)
    splits = source_splits(options)
    validation = next((s for s in VALIDATION_SPLITS if splits and s in splits), "validation")
    wanted = {"train_dataloader": "train", "val_dataloader": validation}
    wanted["test_dataloader"] = "test" if splits and "test" in splits else validation
    if not any(isinstance(cfg.get(key), dict) for key in LOADER_KEYS):
        raise ConfigError(
            "--dataset: the config has no train_dataloader/val_dataloader/test_dataloader to point at it"
        )
    for key in LOADER_KEYS:
        loader = cfg.get(key)
        if not isinstance(loader, dict):
            continue
        old = loader.get("dataset") or {}
        dataset = {k: copy.deepcopy(v) for k, v in old.items() if k in KEPT_KEYS}
        dataset.update(copy.deepcopy(options))
        dataset["split"] = wanted[key]
        loader["dataset"] = dataset
    if resize_model and isinstance(cfg.get("model"), dict):
        resize_model_classes(cfg["model"], source_id2label(options))
    where = f"splits {splits}" if splits else "split names not known before loading"
    logger.info(
        f"dataset {options['path']!r} ({where}): train on {wanted['train_dataloader']!r}, validate on "
        f"{wanted['val_dataloader']!r}, test on {wanted['test_dataloader']!r}"
    )
    return cfg


def source_splits(options: dict[str, Any]) -> list[str] | None:
    """The split names a source has, read without loading its data; None when they cannot be read."""
    path = str(options["path"])
    if path == SYNTHETIC_PATH:
        return ["train", "validation"]
    if _is_saved_to_disk(path):
        index = Path(path) / datasets.config.DATASETDICT_JSON_FILENAME
        return list(json.loads(index.read_text(encoding="utf-8"))["splits"]) if index.is_file() else None
    kwargs = {k: options[k] for k in ("data_files", "data_dir", "revision") if options.get(k) is not None}
    try:
        return list(datasets.get_dataset_split_names(path, options.get("name"), **kwargs))
    except Exception as exc:  # offline, a loader script, no such dataset: the loaders will say
        logger.debug(f"split names of {path!r} not read: {exc}")
        return None


def source_id2label(options: dict[str, Any]) -> dict[int, str] | None:
    """The source's class names, read without loading its data; None when it names none this way.

    In order: the block's `id2label`; the built-in dataset's; an `id2label.json` in the local
    folder; a `ClassLabel` feature of a `save_to_disk` folder or in the source's published
    features; an `id2label.json` in the Hub dataset repo.
    """
    id2label = dataset_id2label(options)  # the block's id2label, synthetic, local id2label.json
    if id2label:
        return id2label
    path = str(options["path"])
    features = None
    try:
        if _is_saved_to_disk(path):
            loaded = datasets.load_from_disk(path)
            features = next(iter(loaded.values())).features if isinstance(loaded, dict) else loaded.features
        else:
            kwargs = {
                k: options[k] for k in ("data_files", "data_dir", "revision") if options.get(k) is not None
            }
            features = datasets.load_dataset_builder(path, options.get("name"), **kwargs).info.features
    except Exception as exc:
        logger.debug(f"features of {path!r} not read: {exc}")
    if features:
        id2label = dataset_id2label(options, _FeaturesOnly(features))
        if id2label:
            return id2label
    if not Path(path).exists() and "/" in path:  # a Hub dataset repo may carry id2label.json
        try:
            return dataset_id2label({**options, "id2label": "id2label.json"})
        except ConfigError:
            return None
    return None


class _FeaturesOnly:
    """Stands for a dataset where only `features` is read (`dataset_id2label`)."""

    def __init__(self, features: Any) -> None:
        self.features = features
        self.column_names = list(features)


def resize_model_classes(model_cfg: dict[str, Any], id2label: dict[int, str] | None) -> None:
    """Size the decode and auxiliary heads to `id2label` (None: to the data, at run time), in place;
    the old dataset's `id2label`, `label2id` and `palette` in `model` are dropped."""
    for key in ("id2label", "label2id", "palette"):
        model_cfg.pop(key, None)
    count = len(id2label) if id2label else None
    heads = [model_cfg.get("decode_head")]
    aux = model_cfg.get("auxiliary_head")
    heads += aux if isinstance(aux, list) else [aux]
    for head in heads:
        if isinstance(head, dict) and "num_classes" in head and head.get("out_channels") != 1:
            head["num_classes"] = count


__all__ = ["LABEL_COLUMNS", "canonical_split", "source_id2label", "source_splits", "use_dataset"]
