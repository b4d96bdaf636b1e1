"""Where a dataset comes from: a config's source opened with `datasets`, and its splits.

A config's `dataset:` holds the `datasets.load_dataset` arguments (`path`, `name`, `data_files`,
`data_dir`, `revision`, `split`, `streaming`, ...) plus our own keys (`OWN_KEYS`). `path:
segaccel/synthetic` is the built-in synthetic dataset; a folder written by `save_to_disk` is read
with `load_from_disk`. A split that the source lacks is found by alias (`val` ↔ `validation`) or
held out of `train` (`validation_split`, `split_seed`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from segaccel.data.synthetic import load_synthetic_dataset
from segaccel.registry import ConfigError

logger = logging.getLogger(__name__)


SYNTHETIC_PATH = "segaccel/synthetic"


OWN_KEYS = (
    "image_column",
    "label_column",
    "reduce_zero_label",
    "label_map",
    "ignore_index",
    "id2label",
    "pipeline",
    "synthetic",
    "palette",
    "validation_split",
    "split_seed",
    "shuffle_buffer_size",
    "skip_bad_samples",
)


VALIDATION_SPLITS = ("validation", "val", "valid")


_SPLIT_ALIASES = {
    "val": ("validation", "valid"),
    "validation": ("val", "valid"),
    "valid": ("validation", "val"),
}


DEFAULT_VALIDATION_SPLIT = 0.1


def build_hf_dataset(dataset_cfg: dict[str, Any], split: str) -> datasets.Dataset | datasets.IterableDataset:
    """The Hugging Face dataset a config describes, for `split` (a `split` key in the config wins).

    The whole source is opened (`split=None`) and the split picked from it, so that `val` finds
    `validation` and, when the source has no validation split, a seeded part of `train` is held
    out (`validation_split`, default 0.1, `split_seed`, default 0): `validation` is that part and
    `train` the rest, both logged; `validation_split: 0` turns this off. A split with slicing
    syntax (`train[:10%]`) is passed to `load_dataset` as is.
    """
    if not isinstance(dataset_cfg, dict) or not dataset_cfg.get("path"):
        raise ConfigError(
            "dataset.path: missing; give a Hub dataset id, a loader name (imagefolder, parquet, ...) with "
            f"data_files, a folder written by save_to_disk, or {SYNTHETIC_PATH!r}"
        )
    path = str(dataset_cfg["path"])
    split = str(dataset_cfg.get("split") or split)
    if path == SYNTHETIC_PATH:
        options = dataset_cfg.get("synthetic") or {}
        try:
            return _pick_split(load_synthetic_dataset(**options), split, dataset_cfg)
        except TypeError as exc:
            raise ConfigError(f"dataset.synthetic: wrong options for the synthetic dataset: {exc}") from exc
    if _is_saved_to_disk(path):
        if dataset_cfg.get("streaming"):
            raise ConfigError(
                f"dataset {path!r}: a save_to_disk folder is read with load_from_disk; drop streaming"
            )
        try:
            loaded = datasets.load_from_disk(path)
        except IndexError as exc:  # `datasets` fails so on a split saved without rows
            raise ValueError(
                f"dataset {path!r}: cannot be read, is a split empty (saved with no rows)?"
            ) from exc
        return _pick_split(loaded, split, dataset_cfg) if isinstance(loaded, datasets.DatasetDict) else loaded
    load_kwargs = {k: v for k, v in dataset_cfg.items() if k not in OWN_KEYS}
    sliced = any(c in split for c in "[+")
    load_kwargs["split"] = split if sliced else None
    loaded = datasets.load_dataset(**load_kwargs)
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return _pick_split(loaded, split, dataset_cfg)
    return loaded


def _is_saved_to_disk(path: str) -> bool:
    folder = Path(path)
    if not folder.is_dir():
        return False
    return (folder / datasets.config.DATASETDICT_JSON_FILENAME).is_file() or (
        folder / datasets.config.DATASET_STATE_JSON_FILENAME
    ).is_file()


def _pick_split(dataset_dict: Any, split: str, dataset_cfg: dict[str, Any]) -> Any:
    """`split` of `dataset_dict`, by name, alias, or as part of a held-out split of `train`."""
    path = str(dataset_cfg.get("path"))
    has_validation = any(name in dataset_dict for name in VALIDATION_SPLITS)
    fraction = dataset_cfg.get("validation_split", DEFAULT_VALIDATION_SPLIT)
    hold_out = not has_validation and "train" in dataset_dict and bool(fraction)
    if split == "train" and hold_out:
        return _held_out(dataset_dict["train"], dataset_cfg, fraction)[0]
    if split in dataset_dict:
        return dataset_dict[split]
    for alias in _SPLIT_ALIASES.get(split, ()):
        if alias in dataset_dict:
            return dataset_dict[alias]
    if split in VALIDATION_SPLITS and hold_out:
        return _held_out(dataset_dict["train"], dataset_cfg, fraction)[1]
    hint = ""
    if split in VALIDATION_SPLITS and "train" in dataset_dict:
        hint = " (validation_split: 0 turned off holding out part of 'train' as validation)"
    raise ConfigError(f"dataset {path!r} has no split {split!r}; its splits are {sorted(dataset_dict)}{hint}")


def _held_out(train: Any, dataset_cfg: dict[str, Any], fraction: float | int) -> tuple[Any, Any]:
    """(rest of train, held-out validation): a seeded random split, or for a stream its first examples."""
    path = str(dataset_cfg.get("path"))
    seed = int(dataset_cfg.get("split_seed", 0))
    if isinstance(train, datasets.IterableDataset):
        count = _stream_holdout_count(train, fraction, path)
        logger.info(
            f"dataset {path!r} has no validation split: the first {count} examples of the 'train' stream are "
            "used as validation and skipped in training (set validation_split: 0 to turn this off)"
        )
        return train.skip(count), train.take(count)
    if not (0 < float(fraction) < 1 or (int(fraction) == fraction and 1 <= fraction < len(train))):
        raise ConfigError(
            f"dataset {path!r}: validation_split must be a fraction in (0, 1) or a count of samples below "
            f"{len(train)}, got {fraction!r}"
        )
    parts = train.train_test_split(test_size=fraction, seed=seed, shuffle=True)
    logger.info(
        f"dataset {path!r} has no validation split: holding out {len(parts['test'])} of the {len(train)} "
        f"'train' samples as validation (validation_split={fraction}, split_seed={seed}); training uses the "
        f"other {len(parts['train'])} (set validation_split: 0 to train on all of them)"
    )
    return parts["train"], parts["test"]


def _stream_holdout_count(train: datasets.IterableDataset, fraction: float | int, path: str) -> int:
    if isinstance(fraction, int) and fraction >= 1:
        return fraction
    splits = getattr(train.info, "splits", None) or {}
    total = splits["train"].num_examples if "train" in splits else None
    if not total:
        raise ConfigError(
            f"dataset {path!r} is streamed and has no validation split; its size is unknown, so give "
            "validation_split as a number of examples (e.g. 500) or validation_split: 0"
        )
    return max(1, round(float(fraction) * total))


def undecoded_images(hf_dataset: Any, columns: Sequence[str | None]) -> Any:
    """`hf_dataset` with its `Image` feature `columns` left undecoded ({bytes, path} dicts).

    Images are then decoded by `segaccel.data.decode` on every path (one decoder, one orientation
    policy), and a corrupt file gives an error naming the sample instead of failing inside `datasets`.
    A change of the `decode` flag only: no data is rewritten.
    """
    features = getattr(hf_dataset, "features", None) or {}
    for column in columns:
        feature = features.get(column) if column else None
        if isinstance(feature, datasets.Image) and feature.decode:
            hf_dataset = hf_dataset.cast_column(column, datasets.Image(decode=False))
    return hf_dataset
