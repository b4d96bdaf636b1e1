"""Datasets: Hugging Face loading from a config, label mapping, and the torch `SegDataset`.

A config's `dataset:` holds the `datasets.load_dataset` arguments (`path`, `name`, `data_files`,
`data_dir`, `revision`, `split`, ...) plus our own keys (`image_column`, `label_column`,
`reduce_zero_label`, `label_map`, `ignore_index`, `id2label`, `palette`, `pipeline`, `synthetic`).
`path: segaccel/synthetic` is the built-in synthetic dataset; a folder written by `save_to_disk`
is read with `load_from_disk`.
"""

from __future__ import annotations

import io
import operator
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import PIL.Image
import torch

from segaccel.data.formatting import PackSegInputs
from segaccel.data.synthetic import load_synthetic_dataset, synthetic_id2label
from segaccel.data.transforms import Compose, LoadAnnotations, init_results
from segaccel.registry import ConfigError

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
)

_SPLIT_ALIASES = {
    "val": ("validation", "valid"),
    "validation": ("val", "valid"),
    "valid": ("validation", "val"),
}


class SampleError(ValueError):
    """A dataset row that cannot be used; the message names the dataset, split, index and problem."""


# --- loading ------------------------------------------------------------------------------------------


def build_hf_dataset(dataset_cfg: dict[str, Any], split: str) -> datasets.Dataset:
    """The Hugging Face dataset a config describes, for `split` (a `split` key in the config wins)."""
    if not isinstance(dataset_cfg, dict) or not dataset_cfg.get("path"):
        raise ConfigError(
            "dataset.path: missing; give a Hub dataset id, a loader name (imagefolder, parquet, ...) with "
            f"data_files, a folder written by save_to_disk, or {SYNTHETIC_PATH!r}"
        )
    path = str(dataset_cfg["path"])
    split = dataset_cfg.get("split") or split
    if path == SYNTHETIC_PATH:
        options = dataset_cfg.get("synthetic") or {}
        try:
            return _pick_split(load_synthetic_dataset(**options), split, path)
        except TypeError as exc:
            raise ConfigError(f"dataset.synthetic: wrong options for the synthetic dataset: {exc}") from exc
    if _is_saved_to_disk(path):
        loaded = datasets.load_from_disk(path)
        return _pick_split(loaded, split, path) if isinstance(loaded, datasets.DatasetDict) else loaded
    load_kwargs = {k: v for k, v in dataset_cfg.items() if k not in OWN_KEYS}
    load_kwargs["split"] = split
    loaded = datasets.load_dataset(**load_kwargs)
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return _pick_split(loaded, split, path)
    return loaded


def _is_saved_to_disk(path: str) -> bool:
    folder = Path(path)
    if not folder.is_dir():
        return False
    return (folder / datasets.config.DATASETDICT_JSON_FILENAME).is_file() or (
        folder / datasets.config.DATASET_STATE_JSON_FILENAME
    ).is_file()


def _pick_split(dataset_dict: Any, split: str, path: str) -> datasets.Dataset:
    if split in dataset_dict:
        return dataset_dict[split]
    for alias in _SPLIT_ALIASES.get(split, ()):
        if alias in dataset_dict:
            return dataset_dict[alias]
    raise ConfigError(f"dataset {path!r} has no split {split!r}; its splits are {sorted(dataset_dict)}")


def dataset_id2label(dataset_cfg: dict[str, Any], hf_dataset: Any = None) -> dict[int, str] | None:
    """Class names: the config's `id2label` (a dict or a list), the synthetic classes, or None."""
    id2label = dataset_cfg.get("id2label")
    if id2label:
        if isinstance(id2label, dict):
            return {int(k): str(v) for k, v in id2label.items()}
        return {i: str(name) for i, name in enumerate(id2label)}
    if dataset_cfg.get("path") == SYNTHETIC_PATH:
        return synthetic_id2label()
    return None


def build_dataset(
    dataset_cfg: dict[str, Any], split: str, seed: int = 0, num_classes: int | None = None
) -> SegDataset:
    """`SegDataset` over `build_hf_dataset(dataset_cfg, split)` with the config's pipeline and options."""
    hf_dataset = build_hf_dataset(dataset_cfg, split)
    return SegDataset(
        hf_dataset,
        pipeline=dataset_cfg.get("pipeline"),
        image_column=dataset_cfg.get("image_column", "image"),
        label_column=dataset_cfg.get("label_column", "label"),
        reduce_zero_label=bool(dataset_cfg.get("reduce_zero_label", False)),
        label_map=dataset_cfg.get("label_map"),
        ignore_index=int(dataset_cfg.get("ignore_index", 255)),
        num_classes=num_classes,
        seed=seed,
        name=str(dataset_cfg["path"]),
        split=str(dataset_cfg.get("split") or split),
        id2label=dataset_id2label(dataset_cfg, hf_dataset),
    )


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


# --- the torch dataset --------------------------------------------------------------------------------


class SegDataset(torch.utils.data.Dataset):
    """A map-style torch dataset over a Hugging Face `datasets.Dataset` of images and label maps.

    `dataset[index]` or `dataset[(epoch, index)]` reads row `index` (image as RGB uint8, mask as
    stored), maps its labels, and runs the pipeline with
    `rng = np.random.default_rng([seed, epoch, index])` (epoch 0 for a plain index), so the
    augmentation of a sample depends only on (seed, epoch, index), never on workers or processes.
    Returns the pipeline's output (PackSegInputs' dict). With `label_column=None` the samples
    have no ground truth (inference). The mask is `gt_seg_map` from the start of the pipeline, or,
    if the pipeline holds `LoadAnnotations`, from that point on (so a test-time Resize before it
    leaves the labels at their original size).
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
    ) -> None:
        self.name = name
        self.split = split
        if not hasattr(hf_dataset, "__getitem__") or not hasattr(hf_dataset, "__len__"):
            raise TypeError(
                f"{self._where()}: SegDataset needs a map-style datasets.Dataset (indexable, with a length), "
                f"got {type(hf_dataset).__name__}; a streaming dataset must be loaded with streaming=False"
            )
        columns = list(getattr(hf_dataset, "column_names", None) or [])
        needed = [c for c in (image_column, label_column) if c is not None]
        if columns:
            missing = [c for c in needed if c not in columns]
            if missing:
                raise SampleError(
                    f"{self._where()}: missing column(s) {missing}; the dataset has columns {columns} "
                    "(set image_column / label_column in the dataset config)"
                )
        self.hf_dataset = hf_dataset
        # Decode only the columns we use.
        self._rows = (
            hf_dataset.select_columns(needed) if isinstance(hf_dataset, datasets.Dataset) else hf_dataset
        )
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
        self._path_view = None

    def __len__(self) -> int:
        return len(self.hf_dataset)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = self._split_index(index)
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
        img, img_path = self._read_image(row[self.image_column], index)
        if img_path is None:
            img_path = self._stored_path(index)
        gt = None
        if self.label_column is not None:
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
            img_id=f"{self.split}/{index}" if self.split else str(index),
            img_path=img_path,
            reduce_zero_label=self.reduce_zero_label,
            defer_gt=self._defer_gt,
        )

    # --- helpers --------------------------------------------------------------------------------------

    def _where(self, index: int | None = None) -> str:
        where = f"dataset {self.name or '<unnamed>'!r} split {self.split or '<unnamed>'!r}"
        return where if index is None else f"{where} index {index}"

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

    def _read_image(self, value: Any, index: int) -> tuple[np.ndarray, str | None]:
        """RGB uint8 (H, W, 3) and the file path if known; grayscale/RGBA/palette images converted."""
        path = None
        if isinstance(value, dict):  # an undecoded Image feature: {"bytes", "path"}
            path = value.get("path")
            value = self._open(value, self.image_column, index)
        if isinstance(value, PIL.Image.Image):
            path = path or getattr(value, "filename", None) or None
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

    def _read_mask(self, value: Any, index: int) -> np.ndarray:
        """The label map as stored (palette indices are labels); single channel and integer."""
        if isinstance(value, dict):
            value = self._open(value, self.label_column, index)
        if isinstance(value, PIL.Image.Image):
            bands = value.getbands()
            if len(bands) != 1:
                raise SampleError(
                    f"{self._where(index)}: mask in column {self.label_column!r} has {len(bands)} channels "
                    f"(mode {value.mode}); a mask must be a single-channel label image "
                    "(mode L, P, I;16 or I) of class ids, never colours"
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
        if not np.issubdtype(arr.dtype, np.integer):
            raise SampleError(
                f"{self._where(index)}: mask in column {self.label_column!r} must hold integer class ids, "
                f"got dtype {arr.dtype}"
            )
        return arr

    def _open(self, value: dict, column: str, index: int) -> PIL.Image.Image:
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

    def _check_labels(self, gt: np.ndarray, index: int) -> None:
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
