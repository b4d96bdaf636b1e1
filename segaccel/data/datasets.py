"""Datasets: Hugging Face loading from a config, label mapping, and the torch `SegDataset`.

A config's `dataset:` holds the `datasets.load_dataset` arguments (`path`, `name`, `data_files`,
`data_dir`, `revision`, `split`, `streaming`, ...) plus our own keys (`image_column`,
`label_column`, `reduce_zero_label`, `label_map`, `ignore_index`, `id2label`, `palette`,
`pipeline`, `validation_split`, `split_seed`, `shuffle_buffer_size`, `synthetic`).
`path: segaccel/synthetic` is the built-in synthetic dataset; a folder written by `save_to_disk`
is read with `load_from_disk`. With `streaming: true` the split is a `datasets.IterableDataset`
and `build_dataset` returns a `SegStreamDataset` (segaccel/data/streaming.py).
"""

from __future__ import annotations

import io
import json
import logging
import operator
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import PIL.Image
import torch

from segaccel.data.collate import SKIPPED_KEY, skip_marker
from segaccel.data.formatting import PackSegInputs
from segaccel.data.synthetic import load_synthetic_dataset, synthetic_id2label
from segaccel.data.transforms import Compose, LoadAnnotations, init_results
from segaccel.registry import ConfigError

if TYPE_CHECKING:
    from segaccel.data.streaming import SegStreamDataset

logger = logging.getLogger(__name__)

SYNTHETIC_PATH = "segaccel/synthetic"

# Keys of a dataset config that are ours, never passed to `datasets.load_dataset`.
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

# Column names recognised without configuration, in order of preference.
IMAGE_COLUMNS = ("image", "pixel_values")
LABEL_COLUMNS = ("label", "annotation", "mask", "semantic_map")

VALIDATION_SPLITS = ("validation", "val", "valid")
_SPLIT_ALIASES = {
    "val": ("validation", "valid"),
    "validation": ("val", "valid"),
    "valid": ("validation", "val"),
}
DEFAULT_VALIDATION_SPLIT = 0.1


class SampleError(ValueError):
    """A dataset row that cannot be used; the message names the dataset, split, index and problem."""


# --- loading ------------------------------------------------------------------------------------------


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


def resolve_columns(
    dataset_cfg: dict[str, Any], column_names: Sequence[str] | None, where: str = "dataset"
) -> tuple[str, str | None]:
    """`(image_column, label_column)`: the configured names, else the first common name present.

    Recognised: images `image`, `pixel_values`; labels `label`, `annotation`, `mask`,
    `semantic_map`. `label_column: null` in the config means no labels (inference).
    """
    columns = list(column_names or [])
    image_column = dataset_cfg.get("image_column")
    if image_column is None:
        found = [c for c in IMAGE_COLUMNS if c in columns]
        if not found:
            raise SampleError(
                f"{where}: no image column found among {columns}; set image_column in the dataset config "
                f"(recognised without configuration: {list(IMAGE_COLUMNS)})"
            )
        image_column = found[0]
    if "label_column" in dataset_cfg:
        label_column = dataset_cfg["label_column"]
    else:
        found = [c for c in LABEL_COLUMNS if c in columns]
        if not found:
            raise SampleError(
                f"{where}: no label column found among {columns}; set label_column in the dataset config "
                f"(recognised without configuration: {list(LABEL_COLUMNS)}), or label_column: null for "
                "images without labels"
            )
        label_column = found[0]
    return str(image_column), (str(label_column) if label_column is not None else None)


def dataset_id2label(dataset_cfg: dict[str, Any], hf_dataset: Any = None) -> dict[int, str] | None:
    """Class names, from the first source that has them.

    1. the config's `id2label`: a dict, a list, or the name of a JSON file (`{"0": "wall", ...}` or a
       list) — a local file, a file in the local dataset folder `path`, or a file in the Hub
       dataset repo `path` (fetched with `hf_hub_download`, at `revision`);
    2. the synthetic dataset's classes;
    3. the names of a `ClassLabel` in the label column's feature;
    4. an `id2label.json` in the local dataset folder `path`.
    """
    id2label = dataset_cfg.get("id2label")
    if id2label:
        if isinstance(id2label, str):
            return _as_id2label(_read_json_label_file(dataset_cfg, id2label), id2label)
        return _as_id2label(id2label, "dataset.id2label")
    path = str(dataset_cfg.get("path", ""))
    if path == SYNTHETIC_PATH:
        return synthetic_id2label()
    names = _class_label_names(hf_dataset, dataset_cfg)
    if names:
        return dict(enumerate(names))
    local = Path(path) / "id2label.json" if path else None
    if local is not None and local.is_file():
        return _as_id2label(json.loads(local.read_text(encoding="utf-8")), str(local))
    return None


def _as_id2label(value: Any, source: str) -> dict[int, str]:
    try:
        if isinstance(value, dict):
            out = {int(k): str(v) for k, v in value.items()}
        elif isinstance(value, (list, tuple)):
            out = {i: str(name) for i, name in enumerate(value)}
        else:
            raise TypeError(type(value).__name__)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{source}: id2label must map class ids to names ({{0: 'wall', ...}}) or list them, got {exc}"
        ) from exc
    if sorted(out) != list(range(len(out))):
        raise ConfigError(
            f"{source}: id2label ids must be 0..{len(out) - 1} without gaps, got {sorted(out)[:10]}"
        )
    return out


def _read_json_label_file(dataset_cfg: dict[str, Any], filename: str) -> Any:
    """The JSON in `filename`: a local file, a file in the local dataset folder, or one in the Hub repo."""
    path = str(dataset_cfg.get("path", ""))
    candidates = [Path(filename)]
    if path and Path(path).is_dir():
        candidates.insert(0, Path(path) / filename)
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    if not path or Path(path).is_dir() or path in ("parquet", "imagefolder", "json", "csv", "arrow"):
        raise ConfigError(
            f"dataset.id2label: no file {filename!r} (looked at {[str(c) for c in candidates]})"
        )
    from huggingface_hub import hf_hub_download

    try:
        local = hf_hub_download(
            repo_id=path, filename=filename, repo_type="dataset", revision=dataset_cfg.get("revision")
        )
    except Exception as exc:
        raise ConfigError(
            f"dataset.id2label: cannot fetch {filename!r} from the Hub dataset repo {path!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return json.loads(Path(local).read_text(encoding="utf-8"))


def _class_label_names(hf_dataset: Any, dataset_cfg: dict[str, Any]) -> list[str] | None:
    features = getattr(hf_dataset, "features", None)
    if not features:
        return None
    column = dataset_cfg.get("label_column") or next((c for c in LABEL_COLUMNS if c in features), None)
    feature = features.get(column) if column else None
    while feature is not None and not isinstance(feature, datasets.ClassLabel):
        feature = getattr(feature, "feature", None)  # Sequence / List / LargeList of ...
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def check_palette(palette: Any, num_classes: int | None, where: str = "dataset.palette") -> list[list[int]]:
    """`palette` as a list of [r, g, b] ints in 0..255, at least one per class."""
    try:
        colours = [[int(c) for c in colour] for colour in palette]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: expected a list of [r, g, b] colours, got {palette!r:.80}") from exc
    if any(len(c) != 3 or min(c) < 0 or max(c) > 255 for c in colours):
        raise ConfigError(f"{where}: every colour must be [r, g, b] with values in 0..255")
    if num_classes is not None and len(colours) < num_classes:
        raise ConfigError(f"{where}: {len(colours)} colours for {num_classes} classes")
    return colours


def build_dataset(
    dataset_cfg: dict[str, Any],
    split: str,
    seed: int = 0,
    num_classes: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    training: bool = False,
    key: str = "dataset",
) -> SegDataset | SegStreamDataset:
    """A torch dataset over `build_hf_dataset(dataset_cfg, split)` with the config's pipeline and options.

    `key` is where `dataset_cfg` sits in the whole config (e.g. `train_dataloader.dataset`): errors
    in the pipeline name `<key>.pipeline.<i>`.

    A map-style split gives a `SegDataset` (the sampler shards it across processes). A streamed
    split gives a `SegStreamDataset` sharded here, once, for process `rank` of `world_size`
    (`split_dataset_by_node`); with `training` it is shuffled with a buffer of
    `shuffle_buffer_size` (default 1000) examples and repeats epoch after epoch.

    With `skip_bad_samples: true`, a bad row is replaced by the next good one in training (batches
    keep their size) and dropped in evaluation (`training=False`: no sample is evaluated twice);
    either way the count reaches the loops through the batches (`SKIPPED_KEY`).
    """
    hf_dataset = build_hf_dataset(dataset_cfg, split)
    name = str(dataset_cfg["path"])
    split_name = str(dataset_cfg.get("split") or split)
    where = f"dataset {name!r} split {split_name!r}"
    image_column, label_column = resolve_columns(
        dataset_cfg, getattr(hf_dataset, "column_names", None), where
    )
    id2label = dataset_id2label(dataset_cfg, hf_dataset)
    if dataset_cfg.get("palette") is not None:
        check_palette(dataset_cfg["palette"], num_classes or (len(id2label) if id2label else None))
    pipeline = Compose(dataset_cfg.get("pipeline") or [PackSegInputs()], key=f"{key}.pipeline")
    last = pipeline.transforms[-1] if pipeline.transforms else None
    if not isinstance(last, PackSegInputs):
        raise ConfigError(
            f"{key}.pipeline: must end with {{type: PackSegInputs}} (it packs `inputs` and `data_samples` "
            f"for the batch), but ends with {type(last).__name__}"
        )
    options = dict(
        pipeline=pipeline,
        image_column=image_column,
        label_column=label_column,
        reduce_zero_label=bool(dataset_cfg.get("reduce_zero_label", False)),
        label_map=dataset_cfg.get("label_map"),
        ignore_index=int(dataset_cfg.get("ignore_index", 255)),
        num_classes=num_classes,
        seed=seed,
        name=name,
        split=split_name,
        id2label=id2label,
        skip_bad_samples=bool(dataset_cfg.get("skip_bad_samples", False)),
    )
    if isinstance(hf_dataset, datasets.IterableDataset):
        from segaccel.data.streaming import SegStreamDataset, prepare_stream

        stream = prepare_stream(
            hf_dataset,
            seed=seed,
            rank=rank,
            world_size=world_size,
            shuffle_buffer_size=int(dataset_cfg.get("shuffle_buffer_size", 1000)) if training else 0,
            columns=[c for c in (image_column, label_column) if c is not None],
        )
        return SegStreamDataset(stream, rank=rank, world_size=world_size, infinite=training, **options)
    return SegDataset(hf_dataset, fill_skipped=training, **options)


LOADER_KEYS = {"train": "train_dataloader", "val": "val_dataloader", "test": "test_dataloader"}


def dataset_from_config(
    cfg: dict[str, Any], which: str = "train", training: bool | None = None, seed: int | None = None
) -> SegDataset | SegStreamDataset:
    """The dataset of a whole config's `train`/`val`/`test` dataloader, as the runner builds it (one process).

    `num_classes` comes from `model.decode_head.num_classes`, else from the dataset's class names.
    `training` (default: `which == "train"`) makes a streamed split repeat and shuffle.
    """
    key = LOADER_KEYS.get(which, which)
    dataset_cfg = (cfg.get(key) or {}).get("dataset") if isinstance(cfg.get(key), dict) else None
    if not isinstance(dataset_cfg, dict):
        raise ConfigError(f"{key}.dataset: missing in the config")
    dataset_cfg = dict(dataset_cfg)
    split = dataset_cfg.pop("split", "train" if key.startswith("train") else "validation")
    num_classes = ((cfg.get("model") or {}).get("decode_head") or {}).get("num_classes")
    if num_classes is None:
        id2label = dataset_id2label(dataset_cfg)
        num_classes = len(id2label) if id2label else None
    dataset = build_dataset(
        dataset_cfg,
        split,
        seed=int(cfg.get("seed", 0) if seed is None else seed),
        num_classes=num_classes,
        training=key.startswith("train") if training is None else training,
        key=f"{key}.dataset",
    )
    if dataset.num_classes is None and dataset.id2label:  # names from the data (ClassLabel feature)
        dataset.num_classes = len(dataset.id2label)
    return dataset


# --- label mapping ------------------------------------------------------------------------------------


def map_labels(
    mask: np.ndarray, reduce_zero_label: bool = False, label_map: dict[int, int] | None = None
) -> np.ndarray:
    """Apply `reduce_zero_label` (0 → 255, 255 stays, others − 1), then `label_map` (old → new).

    Same order and meaning as MMSegmentation's LoadAnnotations. uint8 masks stay uint8 when every
    new label fits; others become int64.
    """
    if not reduce_zero_label and not label_map:
        return mask
    label_map = {int(k): int(v) for k, v in (label_map or {}).items()}
    if mask.dtype == np.uint8 and all(0 <= v <= 255 for v in label_map.values()):
        lut = np.arange(256, dtype=np.int64)
        lut = _map_values(lut, reduce_zero_label, label_map)
        return lut.astype(np.uint8)[mask]
    return _map_values(mask.astype(np.int64), reduce_zero_label, label_map)


def _map_values(values: np.ndarray, reduce_zero_label: bool, label_map: dict[int, int]) -> np.ndarray:
    if reduce_zero_label:
        values = np.where((values == 0) | (values == 255), 255, values - 1)
    if label_map:
        original = values.copy()
        for old, new in label_map.items():
            values[original == old] = new
    return values


# --- reading one sample -------------------------------------------------------------------------------

# Image modes converted to RGB (their meaning is clear); other modes (16-bit, 32-bit, float) are refused.
RGB_CONVERTIBLE_MODES = (
    "RGB",
    "RGBA",
    "RGBX",
    "RGBa",
    "L",
    "LA",
    "La",
    "P",
    "PA",
    "1",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
)
# Mask modes read as class ids as stored (palette indices are labels).
LABEL_MODES = ("L", "P", "1", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


class SampleReader:
    """Reads dataset rows into the results dict a pipeline starts from, with errors that name the sample.

    Shared by `SegDataset` (map-style) and `SegStreamDataset` (streamed). Images become RGB uint8
    (H, W, 3): grayscale, palette, RGBA (alpha dropped), CMYK and YCbCr images are converted;
    16-bit, 32-bit and float images are refused (how to scale them to 8 bits is not clear). Masks
    are read as stored: modes L, P (indices, never colours), 1, I;16 (16-bit) and I (32-bit), or
    integer arrays; colour, multi-channel and float masks are refused. Labels are mapped
    (`reduce_zero_label`, `label_map`) and, with `num_classes`, checked to lie in
    `[0, num_classes)` or be `ignore_index`.

    With `skip_bad_samples` a row that raises `SampleError` is logged (a warning naming the dataset,
    split, index and problem) and skipped instead. The skip is reported with the items handed out
    (`SKIPPED_KEY` on a sample, or a `skip_marker`), so `seg_collate` and the loops can total it over
    DataLoader workers and processes. `num_skipped` counts only this copy's skips (one copy per
    process, and per DataLoader worker when there are workers), not the run's total.
    """

    skip_bad_samples: bool = False
    num_skipped: int = 0

    def _skip(self, exc: SampleError) -> None:
        """Count (in this copy) and log a bad sample that `skip_bad_samples` skips."""
        self.num_skipped += 1
        logger.warning(f"skip_bad_samples: skipped ({self.num_skipped} so far here): {exc}")

    def _init_reader(
        self,
        pipeline: Sequence[dict | Callable] | Compose | None,
        image_column: str,
        label_column: str | None,
        reduce_zero_label: bool,
        label_map: dict[int, int] | None,
        ignore_index: int,
        num_classes: int | None,
        seed: int,
        name: str,
        split: str,
        id2label: dict[int, str] | None,
    ) -> None:
        self.name = name
        self.split = split
        self.pipeline = pipeline if isinstance(pipeline, Compose) else Compose(pipeline or [PackSegInputs()])
        # A pipeline with LoadAnnotations takes the mask there (test pipelines: labels never resized).
        self._defer_gt = any(isinstance(t, LoadAnnotations) for t in self.pipeline.transforms)
        self.image_column = image_column
        self.label_column = label_column
        self.reduce_zero_label = reduce_zero_label
        self.label_map = {int(k): int(v) for k, v in label_map.items()} if label_map else None
        self.ignore_index = ignore_index
        self.num_classes = num_classes
        self.seed = seed
        self.id2label = id2label

    def _where(self, index: int | str | None = None) -> str:
        where = f"dataset {self.name or '<unnamed>'!r} split {self.split or '<unnamed>'!r}"
        return where if index is None else f"{where} index {index}"

    def _check_columns(self, columns: Sequence[str] | None) -> None:
        needed = [c for c in (self.image_column, self.label_column) if c is not None]
        columns = list(columns or [])
        if columns:
            missing = [c for c in needed if c not in columns]
            if missing:
                raise SampleError(
                    f"{self._where()}: missing column(s) {missing}; the dataset has columns {columns} "
                    "(set image_column / label_column in the dataset config)"
                )

    def row_results(
        self, row: dict[str, Any], index: int | str, img_id: str, img_path: str | None = None
    ) -> dict[str, Any]:
        """The results dict of one row (labels mapped and checked); `index` names it in errors."""
        for column in (self.image_column, self.label_column):
            if column is not None and column not in row:
                raise SampleError(
                    f"{self._where(index)}: the row has no column {column!r}; it has {sorted(row)}"
                )
        img, path = self._read_image(row[self.image_column], index)
        gt = None
        if self.label_column is not None:
            if row[self.label_column] is None:
                raise SampleError(
                    f"{self._where(index)}: column {self.label_column!r} is empty (None) for this row; "
                    "a split without labels needs label_column: null"
                )
            gt = self._read_mask(row[self.label_column], index)
            if gt.shape != img.shape[:2]:
                raise SampleError(
                    f"{self._where(index)}: image size (h, w) = {img.shape[:2]} but mask size = {gt.shape}; "
                    "image and mask must have the same size"
                )
            gt = map_labels(gt, self.reduce_zero_label, self.label_map)
            self._check_labels(gt, index)
        return init_results(
            img,
            gt_seg_map=gt,
            img_id=img_id,
            img_path=img_path or path,
            reduce_zero_label=self.reduce_zero_label,
            defer_gt=self._defer_gt,
        )

    def _read_image(self, value: Any, index: int | str) -> tuple[np.ndarray, str | None]:
        """RGB uint8 (H, W, 3) and the file path if known."""
        path = None
        if isinstance(value, dict):  # an undecoded Image feature: {"bytes", "path"}
            path = value.get("path")
            value = self._open(value, self.image_column, index)
        if isinstance(value, PIL.Image.Image):
            path = path or getattr(value, "filename", None) or None
            if value.mode not in RGB_CONVERTIBLE_MODES:
                raise SampleError(
                    f"{self._where(index)}: image in column {self.image_column!r} has mode {value.mode!r} "
                    "(more than 8 bits per channel); convert it to 8-bit RGB first, the scaling to use is "
                    "not known here"
                )
            if value.mode != "RGB":
                value = value.convert("RGB")
            return np.asarray(value), path
        arr = np.asarray(value)
        if (
            arr.dtype != np.uint8
            or arr.ndim not in (2, 3)
            or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4))
        ):
            raise SampleError(
                f"{self._where(index)}: column {self.image_column!r} must hold images "
                f"(PIL or uint8 (H, W[, C]) arrays), got {type(value).__name__} "
                f"with dtype {arr.dtype} and shape {arr.shape}"
            )
        if arr.ndim == 2 or arr.shape[2] == 1:
            arr = np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
        return np.ascontiguousarray(arr[..., :3]), path

    def _read_mask(self, value: Any, index: int | str) -> np.ndarray:
        """The label map as stored (palette indices are labels); single channel and integer."""
        if isinstance(value, dict):
            value = self._open(value, self.label_column, index)
        if isinstance(value, PIL.Image.Image):
            if value.mode not in LABEL_MODES:
                raise SampleError(
                    f"{self._where(index)}: mask in column {self.label_column!r} has "
                    f"{len(value.getbands())} channel(s) (mode {value.mode}); a mask must be a "
                    f"single-channel label image of class ids (modes {', '.join(LABEL_MODES)}), never "
                    "colours"
                )
        arr = np.asarray(value)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise SampleError(
                f"{self._where(index)}: mask in column {self.label_column!r} must be (H, W) class ids, "
                f"got shape {arr.shape} (a multi-channel mask is not a label map)"
            )
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all() and (arr == np.rint(arr)).all():
            arr = arr.astype(np.int64)  # whole numbers stored as floats: their meaning is clear
        if not np.issubdtype(arr.dtype, np.integer):
            what = " with fractional values" if np.issubdtype(arr.dtype, np.floating) else ""
            raise SampleError(
                f"{self._where(index)}: mask in column {self.label_column!r} must hold integer class ids, "
                f"got dtype {arr.dtype}{what}"
            )
        return arr

    def _open(self, value: dict, column: str, index: int | str) -> PIL.Image.Image:
        try:
            if value.get("bytes") is not None:
                image = PIL.Image.open(io.BytesIO(value["bytes"]))
            else:
                image = PIL.Image.open(value["path"])
            image.load()
            return image
        except Exception as exc:
            raise SampleError(
                f"{self._where(index)}: column {column!r} cannot be decoded as an image: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _check_labels(self, gt: np.ndarray, index: int | str) -> None:
        if self.num_classes is None:
            return
        bad = (gt >= self.num_classes) & (gt != self.ignore_index)
        if np.issubdtype(gt.dtype, np.signedinteger):
            bad |= gt < 0
        if bad.any():
            values = np.unique(gt[bad])
            shown = ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
            raise SampleError(
                f"{self._where(index)}: mask labels [{shown}] are outside [0, {self.num_classes}) and not "
                f"ignore_index {self.ignore_index} (after reduce_zero_label={self.reduce_zero_label} and "
                f"label_map); check num_classes, reduce_zero_label and label_map"
            )


# --- the torch dataset --------------------------------------------------------------------------------


class SegDataset(SampleReader, torch.utils.data.Dataset):
    """A map-style torch dataset over a Hugging Face `datasets.Dataset` of images and label maps.

    `dataset[index]` or `dataset[(epoch, index)]` reads row `index` (image as RGB uint8, mask as
    stored), maps its labels, and runs the pipeline with
    `rng = np.random.default_rng([seed, epoch, index])` (epoch 0 for a plain index), so the
    augmentation of a sample depends only on (seed, epoch, index), never on workers or processes.
    Returns the pipeline's output (PackSegInputs' dict). With `label_column=None` the samples
    have no ground truth (inference). The mask is `gt_seg_map` from the start of the pipeline, or,
    if the pipeline holds `LoadAnnotations`, from that point on (so a test-time Resize before it
    leaves the labels at their original size).

    `skip_bad_samples`: a row raising `SampleError` is logged and skipped. With `fill_skipped`
    (training) the next good row, wrapping around, stands in and its dict carries the number of
    bad rows skipped for it under `SKIPPED_KEY`; without (evaluation, so no sample counts twice) the
    item is `skip_marker(1)`, which `seg_collate` drops and counts.
    """

    def __init__(
        self,
        hf_dataset: datasets.Dataset,
        pipeline: Sequence[dict | Callable] | Compose | None,
        image_column: str = "image",
        label_column: str | None = "label",
        reduce_zero_label: bool = False,
        label_map: dict[int, int] | None = None,
        ignore_index: int = 255,
        num_classes: int | None = None,
        seed: int = 0,
        name: str = "",
        split: str = "",
        id2label: dict[int, str] | None = None,
        skip_bad_samples: bool = False,
        fill_skipped: bool = True,
    ) -> None:
        self.name = name
        self.split = split
        self.skip_bad_samples = skip_bad_samples
        self.fill_skipped = fill_skipped
        self.num_skipped = 0
        if not hasattr(hf_dataset, "__getitem__") or not hasattr(hf_dataset, "__len__"):
            raise TypeError(
                f"{self._where()}: SegDataset needs a map-style datasets.Dataset (indexable, with a length), "
                f"got {type(hf_dataset).__name__}; a streamed dataset is read by SegStreamDataset"
            )
        self._init_reader(
            pipeline,
            image_column,
            label_column,
            reduce_zero_label,
            label_map,
            ignore_index,
            num_classes,
            seed,
            name,
            split,
            id2label,
        )
        self._check_columns(getattr(hf_dataset, "column_names", None))
        self.hf_dataset = hf_dataset
        needed = [c for c in (image_column, label_column) if c is not None]
        # Decode only the columns we use.
        self._rows = (
            hf_dataset.select_columns(needed) if isinstance(hf_dataset, datasets.Dataset) else hf_dataset
        )
        self._path_view = None

    def __len__(self) -> int:
        return len(self.hf_dataset)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = self._split_index(index)
        if not self.skip_bad_samples:
            return self._get(epoch, index)
        if not self.fill_skipped:  # evaluation: dropped (and counted) by seg_collate
            try:
                return self._get(epoch, index)
            except SampleError as exc:
                self._skip(exc)
                return skip_marker(1)
        # Training: the next good row (wrapping around) stands in, so batches keep their size.
        n = len(self)
        for offset in range(n):
            try:
                out = self._get(epoch, (index + offset) % n)
            except SampleError as exc:
                self._skip(exc)
                continue
            if offset:
                out[SKIPPED_KEY] = offset
            return out
        raise SampleError(f"{self._where()}: skip_bad_samples: all {n} samples are bad")

    def _get(self, epoch: int, index: int) -> dict[str, Any]:
        results = self.load_results(index)
        rng = np.random.default_rng([self.seed, epoch, index])
        out = self.pipeline(results, rng=rng)
        if out is None:
            raise SampleError(f"{self._where(index)}: the pipeline returned None")
        return out

    def load_results(self, index: int) -> dict[str, Any]:
        """Row `index` as the results dict a pipeline starts from (labels mapped and checked)."""
        try:
            row = self._rows[index]
        except Exception as exc:  # a corrupt file, an unreadable path, ...
            raise SampleError(
                f"{self._where(index)}: cannot read the row ({self._which_column_fails(index)}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        img_id = f"{self.split}/{index}" if self.split else str(index)
        results = self.row_results(row, index, img_id)
        if results["img_path"] is None:
            results["img_path"] = self._stored_path(index)
        return results

    def _split_index(self, index: int | tuple[int, int]) -> tuple[int, int]:
        if isinstance(index, tuple):
            if len(index) != 2:
                raise IndexError(f"{self._where()}: index must be an int or (epoch, index), got {index!r}")
            epoch, index = index
        else:
            epoch = 0
        epoch, index = operator.index(epoch), operator.index(index)
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"{self._where()}: index {index} out of range for {n} samples")
        if epoch < 0:
            raise IndexError(f"{self._where()}: epoch must be >= 0, got {epoch}")
        return epoch, index

    def _which_column_fails(self, index: int) -> str:
        if not isinstance(self.hf_dataset, datasets.Dataset):
            return "column unknown"
        for column in (self.image_column, self.label_column):
            if column is None:
                continue
            try:
                self.hf_dataset.select_columns([column])[index]
            except Exception:
                return f"column {column!r} cannot be decoded: corrupt or missing file?"
        return "reading failed"

    def _stored_path(self, index: int) -> str | None:
        """The image feature's stored `path` (e.g. the original file name of embedded bytes), if any."""
        if not isinstance(self.hf_dataset, datasets.Dataset):
            return None
        if not isinstance(self.hf_dataset.features.get(self.image_column), datasets.Image):
            return None
        if self._path_view is None:
            self._path_view = self.hf_dataset.select_columns([self.image_column]).with_format("arrow")
        path = self._path_view[index].column(0)[0]["path"].as_py()
        return os.fspath(path) if path else None

    def __repr__(self) -> str:
        return f"SegDataset({self._where()}, {len(self)} samples, pipeline={self.pipeline!r})"
