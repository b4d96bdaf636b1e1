"""The row reader: one dataset row → the results dict a pipeline starts from, with errors naming the sample.

Images and label maps are decoded by `segaccel.data.decode` (one decoder, one orientation policy:
images upright by their EXIF tag, masks as stored), labels mapped (`reduce_zero_label`,
`label_map`) and checked. Shared by `SegDataset` (map-style) and `SegStreamDataset` (streamed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from segaccel.data.decode import DecodeError, decode_image, decode_mask
from segaccel.data.transforms import Compose, LoadAnnotations, PackSegInputs, init_results

logger = logging.getLogger(__name__)

# Column names recognised without configuration, in order of preference.
IMAGE_COLUMNS = ("image", "pixel_values", "img")
LABEL_COLUMNS = ("label", "annotation", "mask", "semantic_map", "segmentation", "seg_map", "gt_seg_map")


class SampleError(ValueError):
    """A dataset row that cannot be used; the message names the dataset, split, index and problem."""


def resolve_columns(
    dataset_cfg: dict[str, Any], column_names: Sequence[str] | None, where: str = "dataset"
) -> tuple[str, str | None]:
    """`(image_column, label_column)`: the configured names, else the first common name present.

    Recognised: images `image`, `pixel_values`, `img`; labels `label`, `annotation`, `mask`,
    `semantic_map`, `segmentation`, `seg_map`, `gt_seg_map`. `label_column: null` in the config
    means no labels (inference).
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


# --- label mapping ------------------------------------------------------------------------------------


def map_labels(
    mask: np.ndarray, reduce_zero_label: bool = False, label_map: dict[int, int] | None = None
) -> np.ndarray:
    """Apply `reduce_zero_label` (0 → 255, 255 stays, others − 1), then `label_map` (old → new).

    Same order and meaning as MMSegmentation's LoadAnnotations. uint8 masks stay uint8 when every
    new label fits (one `cv2.LUT` pass); others become int64.
    """
    if not reduce_zero_label and not label_map:
        return mask
    label_map = {int(k): int(v) for k, v in (label_map or {}).items()}
    if mask.dtype == np.uint8 and all(0 <= v <= 255 for v in label_map.values()):
        return cv2.LUT(mask, label_lut(reduce_zero_label, label_map).astype(np.uint8))
    return _map_values(mask.astype(np.int64), reduce_zero_label, label_map)


def label_lut(reduce_zero_label: bool, label_map: dict[int, int] | None) -> np.ndarray:
    """(256,) int64: the label each stored uint8 value becomes after `reduce_zero_label` and `label_map`."""
    label_map = {int(k): int(v) for k, v in (label_map or {}).items()}
    return _map_values(np.arange(256, dtype=np.int64), reduce_zero_label, label_map)


def _map_values(values: np.ndarray, reduce_zero_label: bool, label_map: dict[int, int]) -> np.ndarray:
    if reduce_zero_label:
        values = np.where((values == 0) | (values == 255), 255, values - 1)
    if label_map:
        original = values.copy()
        for old, new in label_map.items():
            values[original == old] = new
    return values


def _sideways_hint(orientation: int, img: np.ndarray, gt: np.ndarray) -> str:
    """Why a mask can be the image's size turned a quarter: the image was turned upright by its EXIF tag."""
    if orientation not in (5, 6, 7, 8) or gt.shape != img.shape[1::-1]:
        return ""
    return (
        f" (the image was turned upright by its EXIF orientation tag {orientation}; masks are read as "
        "stored, so this one was drawn on the stored, sideways pixels: save the mask upright, or the "
        "image without the tag)"
    )


# --- reading one sample -------------------------------------------------------------------------------


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
        img, path, orientation = self._read_image(row[self.image_column], index)
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
                    f"image and mask must have the same size{_sideways_hint(orientation, img, gt)}"
                )
            gt = self.map_and_check_labels(gt, index)
        return init_results(
            img,
            gt_seg_map=gt,
            img_id=img_id,
            img_path=img_path or path,
            reduce_zero_label=self.reduce_zero_label,
            defer_gt=self._defer_gt,
        )

    def _read_image(self, value: Any, index: int | str) -> tuple[np.ndarray, str | None, int]:
        """RGB uint8 (H, W, 3), upright; the file path if known; the EXIF orientation applied (1: none)."""
        try:
            pixels, path, orientation = decode_image(value)
        except DecodeError as exc:
            raise SampleError(f"{self._where(index)}: image in column {self.image_column!r} {exc}") from exc
        return pixels, path, orientation

    def _read_mask(self, value: Any, index: int | str) -> np.ndarray:
        """The label map as stored (palette indices are labels); single channel and integer."""
        try:
            arr = decode_mask(value)
        except DecodeError as exc:
            raise SampleError(f"{self._where(index)}: mask in column {self.label_column!r} {exc}") from exc
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

    def map_and_check_labels(self, gt: np.ndarray, index: int | str) -> np.ndarray:
        """`reduce_zero_label` and `label_map` applied, labels checked against `num_classes`.

        A uint8 mask (the usual PNG) takes one look-up pass (`cv2.LUT`, skipped when nothing maps),
        and is checked on its stored values without another full pass when its value range cannot
        hold a bad label (`cv2.minMaxLoc`), else through one histogram; other dtypes through numpy.
        """
        label_map = self.label_map or {}
        if gt.dtype != np.uint8 or not all(0 <= v <= 255 for v in label_map.values()):
            gt = map_labels(gt, self.reduce_zero_label, self.label_map)
            self._check_labels(gt, index)
            return gt
        mapped = label_lut(self.reduce_zero_label, label_map)
        if self.num_classes is not None:
            self._check_stored_labels(gt, mapped, index)
        if self.reduce_zero_label or label_map:
            return cv2.LUT(gt, mapped.astype(np.uint8))
        return gt

    def _check_stored_labels(self, raw: np.ndarray, mapped: np.ndarray, index: int | str) -> None:
        """Check a uint8 mask through `mapped` (what each stored value becomes) before mapping it."""
        bad = ((mapped >= self.num_classes) & (mapped != self.ignore_index)) | (mapped < 0)
        if not bad.any():
            return
        low, high, _, _ = cv2.minMaxLoc(raw)
        if not bad[int(low) : int(high) + 1].any():
            return
        present = cv2.calcHist([raw], [0], None, [256], [0, 256]).ravel() > 0
        if (bad & present).any():
            self._raise_bad_labels(np.unique(mapped[bad & present]), index)

    def _check_labels(self, gt: np.ndarray, index: int | str) -> None:
        if self.num_classes is None:
            return
        bad = (gt >= self.num_classes) & (gt != self.ignore_index)
        if np.issubdtype(gt.dtype, np.signedinteger):
            bad |= gt < 0
        if bad.any():
            self._raise_bad_labels(np.unique(gt[bad]), index)

    def _raise_bad_labels(self, values: np.ndarray, index: int | str) -> None:
        shown = ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
        raise SampleError(
            f"{self._where(index)}: mask labels [{shown}] are outside [0, {self.num_classes}) and not "
            f"ignore_index {self.ignore_index} (after reduce_zero_label={self.reduce_zero_label} and "
            f"label_map); check num_classes, reduce_zero_label and label_map"
        )
