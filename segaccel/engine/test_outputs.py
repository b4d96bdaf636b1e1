"""What evaluation writes: `metrics.json`, predicted masks, overlays, the confusion matrix.

`write_metrics_json` is the one writer of `metrics.json` (a test run's `WORK_DIR/metrics.json` and
the copy in every exported model folder): strict JSON, a NaN or infinite figure (a class absent from
predictions and labels) written as `null`. `per_class_table` is its per-class layout.

`PredictionWriter` (`--out-dir`) and `OverlayWriter` (`--show-dir`) receive every predicted batch
from `TestLoop`; each process writes the files of its own shard (one file per sample, named after
the sample, so processes never write the same file and nothing is gathered). Names come from
`OutputNames`: each sample's image file stem when stems are unique in the dataset; else its path
relative to the folder all the images share (`train/a/img.png`, `val/b/img.png`), and only where that
still repeats (or for samples without a path) the dataset index as a stable suffix (`img_7.png`). So
one file is written per sample, never one over another, and the count logged is the count written.
The per-class table and the confusion matrix come from the metric after its cross-process
reduction and are written by the main process.

A writer's `process(batch, outputs, indices)` gets `batch["inputs"]`, `outputs` and `indices` aligned:
bad samples dropped by `skip_bad_samples` are in none of them, and a batch whose samples were all
dropped comes as empty lists (nothing is written).
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image, ImageDraw, ImageFont

from segaccel.engine.atomic import write_json_atomically
from segaccel.engine.logging import logger
from segaccel.structures import SegDataSample
from segaccel.visualization import make_comparison

METRICS_JSON = "metrics.json"


def json_safe(value: Any) -> Any:
    """`value` as plain JSON data: NaN and infinite numbers become None (recursively).

    Dicts, lists and tuples are walked; NumPy scalars and arrays and one-element tensors become
    Python numbers and lists.
    """
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return json_safe(value.item() if value.numel() == 1 else value.tolist())
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_metrics_json(
    path: str | Path, metrics: Mapping[str, Any], per_class: Mapping[str, Any] | None = None
) -> Path:
    """Write `metrics` (and `per_class`, when given, under `"per_class"`) as strict JSON to `path`.

    NaN and infinite values are written as `null` (a bare `NaN` is not JSON); the file is replaced
    atomically. Returns the path.
    """
    data = dict(metrics)
    if per_class is not None:
        data["per_class"] = per_class
    path = Path(path)
    write_json_atomically(path, json_safe(data), allow_nan=False)
    return path


class OutputNames:
    """One output name per sample (see the module docstring), the same in every process.

    `paths` are the dataset's image paths in index order (None where unknown); without them (a
    streamed dataset) names are the samples' stems, a repeat within this process getting `_<n>`.
    """

    def __init__(self, paths: Sequence[str | None] | None = None) -> None:
        self.names = unique_output_names(paths) if paths is not None else None
        self._taken: dict[str, int] = {}

    def __call__(self, sample: SegDataSample, index: int | None) -> str:
        if self.names is not None and index is not None and 0 <= index < len(self.names):
            return self.names[index]
        name = output_name(sample, index)
        n = self._taken.get(name, 0)
        self._taken[name] = n + 1
        return name if n == 0 else f"{name}_{n}"


def unique_output_names(paths: Sequence[str | None]) -> list[str]:
    """Names without extension, one per path, all different: stems, else relative paths, else `_<index>`."""
    stems = [Path(p).stem if p else f"{i:06d}" for i, p in enumerate(paths)]
    if len(set(stems)) == len(stems):
        return stems
    names = stems
    known = [os.path.normpath(p) for p in paths if p]
    try:
        root = os.path.commonpath([os.path.dirname(p) or "." for p in known]) if known else None
    except ValueError:  # absolute and relative paths mixed
        root = None
    if root is not None:
        names = [
            _relative_stem(os.path.normpath(p), root) if p else stems[i] for i, p in enumerate(paths)
        ]
    counts = Counter(names)
    return [f"{n}_{i}" if counts[n] > 1 else n for i, n in enumerate(names)]


def _relative_stem(path: str, root: str) -> str:
    rel = os.path.splitext(os.path.relpath(path, root or "."))[0]
    parts = [part for part in rel.replace(os.sep, "/").split("/") if part not in ("", ".", "..")]
    return "/".join(parts) or Path(path).stem


def dataset_image_paths(dataset: Any) -> list[str | None] | None:
    """Every sample's image path in index order, read from the Arrow table without the image bytes;
    None when the dataset cannot say (a stream, a column without paths)."""
    hf = getattr(dataset, "hf_dataset", None)
    column = getattr(dataset, "image_column", None)
    try:
        chunks = hf.data.column(column).chunks
        if chunks and pa.types.is_struct(chunks[0].type):
            paths = [p for chunk in chunks for p in chunk.field("path").to_pylist()]
        elif chunks and pa.types.is_string(chunks[0].type):
            paths = [p for chunk in chunks for p in chunk.to_pylist()]
        else:
            return None
        indices = getattr(hf, "_indices", None)  # a selected/shuffled view of the table
        if indices is not None:
            paths = [paths[i] for i in indices.column(0).to_pylist()]
    except Exception:  # not a datasets.Dataset over an Arrow table: fall back to per-sample names
        return None
    return paths if len(paths) == len(dataset) else None


def output_name(sample: SegDataSample, index: int | None) -> str:
    """A file stem for a sample: its image file's stem, else its dataset index, else its `img_id`."""
    path = sample.get("img_path")
    if path:
        return Path(str(path)).stem
    if index is not None:
        return f"{index:06d}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(sample.get("img_id", "sample"))).strip("_") or "sample"


def save_label_png(mask: np.ndarray, path: str | Path) -> None:
    """An `(H, W)` map of label ids as a single-channel PNG: 8-bit if every id fits, else 16-bit."""
    mask = np.asarray(mask)
    if mask.size and (mask.min() < 0 or mask.max() > 65535):
        raise ValueError(
            f"{path}: label ids must be in [0, 65535] to be stored as PNG, got {mask.min()}..{mask.max()}"
        )
    if mask.size == 0 or mask.max() <= 255:
        Image.fromarray(mask.astype(np.uint8), mode="L").save(path)
    else:
        Image.fromarray(mask.astype(np.uint16)).save(path)  # mode I;16


def to_original_ids(
    pred: np.ndarray, reduce_zero_label: bool = False, label_map: Mapping[int, int] | None = None
) -> np.ndarray:
    """Predicted class ids back to the dataset's stored ids: the dataset's mapping undone.

    The dataset applies `reduce_zero_label` (stored id − 1) and then `label_map` (old → new); this
    applies the inverse `label_map` (new → old; where several old ids share a new id, the smallest
    old id) and then adds 1 for `reduce_zero_label`.
    """
    out = np.asarray(pred).astype(np.int64)
    if label_map:
        inverse: dict[int, int] = {}
        for old, new in sorted((int(k), int(v)) for k, v in label_map.items()):
            inverse.setdefault(new, old)
        lut = np.arange(max(int(out.max(initial=0)), *inverse) + 1, dtype=np.int64)
        for new, old in inverse.items():
            lut[new] = old
        out = lut[out]
    if reduce_zero_label:
        out = out + 1
    return out


class PredictionWriter:
    """`--out-dir`: each predicted mask as a PNG of label ids, `<name>.png`.

    With `original_ids`, ids are the dataset's stored ids (`to_original_ids`: +1 for a
    `reduce_zero_label` dataset, the inverse `label_map`), ready for a benchmark server.
    """

    def __init__(
        self,
        out_dir: str | Path,
        original_ids: bool = False,
        reduce_zero_label: bool = False,
        label_map: Mapping[int, int] | None = None,
        names: OutputNames | None = None,
    ) -> None:
        self.out_dir = output_folder(out_dir, "--out-dir")
        self.original_ids = original_ids
        self.reduce_zero_label = reduce_zero_label
        self.label_map = dict(label_map) if label_map else None
        self.names = names or OutputNames()
        self.written: list[Path] = []

    def process(
        self, batch: dict[str, Any], outputs: list[SegDataSample], indices: Sequence[int | None]
    ) -> None:
        for sample, index in zip(outputs, indices):
            pred = sample.pred_sem_seg.data[0].cpu().numpy()
            if self.original_ids:
                pred = to_original_ids(pred, self.reduce_zero_label, self.label_map)
            path = output_path(self.out_dir, self.names(sample, index))
            save_label_png(pred, path)
            self.written.append(path)


class OverlayWriter:
    """`--show-dir`: image | ground truth | prediction over the original image, `<name>.png`.

    Images lower than `min_height` are enlarged by a whole factor (nearest neighbour) to stay readable.
    """

    def __init__(
        self,
        show_dir: str | Path,
        palette: Sequence[Sequence[int]],
        class_names: Sequence[str] | None = None,
        dataset: Any = None,
        alpha: float = 0.5,
        min_height: int = 192,
        names: OutputNames | None = None,
    ) -> None:
        self.show_dir = output_folder(show_dir, "--show-dir")
        self.names = names or OutputNames()
        self.palette = [list(c) for c in palette]
        self.class_names = list(class_names) if class_names else None
        self.dataset = dataset
        self.alpha = alpha
        self.min_height = min_height
        self.written: list[Path] = []

    def process(
        self, batch: dict[str, Any], outputs: list[SegDataSample], indices: Sequence[int | None]
    ) -> None:
        for i, (sample, index) in enumerate(zip(outputs, indices)):
            pred = sample.pred_sem_seg.data[0].cpu().numpy()
            gt = sample.gt_sem_seg.data[0].cpu().numpy() if "gt_sem_seg" in sample else None
            image = self._image(batch, i, index, pred.shape)
            path = output_path(self.show_dir, self.names(sample, index))
            comparison = make_comparison(
                image, gt, pred, self.palette, self.class_names, alpha=self.alpha, min_height=self.min_height
            )
            comparison.save(path)
            self.written.append(path)

    def _image(self, batch: dict[str, Any], i: int, index: int | None, shape: tuple[int, int]) -> np.ndarray:
        """The original image (from the dataset), else the model's input resized to `ori_shape`."""
        if index is not None and hasattr(self.dataset, "load_results"):
            image = np.asarray(self.dataset.load_results(index)["img"])
            if image.shape[:2] == tuple(shape):
                return image
        tensor = batch["inputs"][i]
        image = (
            tensor.permute(1, 2, 0).cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
        )
        image = image.astype(np.uint8)
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        if image.shape[:2] != tuple(shape):
            image = np.asarray(Image.fromarray(image[..., :3]).resize((shape[1], shape[0]), Image.BILINEAR))
        return image[..., :3]


def make_writers(
    dataset: Any,
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str],
    out_dir: str | Path | None = None,
    show_dir: str | Path | None = None,
    original_ids: bool = False,
) -> list[Any]:
    """The writers a test run asks for: masks to `out_dir` (in the dataset's stored ids with
    `original_ids`, undoing its `reduce_zero_label` and `label_map`), overlays to `show_dir`."""
    writers: list[Any] = []
    paths = dataset_image_paths(dataset) if (out_dir is not None or show_dir is not None) else None
    if out_dir is not None:
        writers.append(
            PredictionWriter(
                out_dir,
                original_ids=original_ids,
                reduce_zero_label=bool(getattr(dataset, "reduce_zero_label", False)),
                label_map=getattr(dataset, "label_map", None),
                names=OutputNames(paths),
            )
        )
    if show_dir is not None:
        names = OutputNames(paths)
        writers.append(OverlayWriter(show_dir, palette, class_names, dataset=dataset, names=names))
    return writers


def output_folder(folder: str | Path, option: str) -> Path:
    """`folder`, created; a clear error, before anything is predicted, when it cannot be one."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{option} {folder}: exists and is not a folder (nothing was written)")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def output_path(folder: Path, name: str) -> Path:
    """`folder/<name>.png`, its sub-folders created (a name may mirror the dataset's folders)."""
    path = folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_test_results(
    work_dir: str | Path,
    metrics: Mapping[str, Any],
    evaluator: Any,
    writers: Sequence[Any] = (),
    confusion_matrix: bool = False,
) -> Path:
    """After a test run (main process): `work_dir/metrics.json` with the summary and per-class
    table, the confusion matrix if asked, and a log line for each writer's files. Returns the path
    of `metrics.json`."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    class_names = list(evaluator.class_names)
    table = per_class_table(evaluator.per_class, class_names)
    path = write_metrics_json(work_dir / METRICS_JSON, metrics, table)
    logger.info(f"wrote {path}")
    if confusion_matrix:
        paths = write_confusion_matrix(evaluator.confusion_matrix, class_names, work_dir)
        logger.info("wrote " + ", ".join(str(p) for p in paths))
    for writer in writers:
        if writer.written:
            folder = getattr(writer, "out_dir", None) or getattr(writer, "show_dir", None)
            logger.info(f"wrote {len(set(writer.written))} files (this process's) to {folder}")
    return path


def per_class_table(per_class: Mapping[str, np.ndarray], class_names: Sequence[str]) -> dict[str, dict]:
    """`{metric: {class name: value rounded to 2 decimals, or None for NaN}}` (the metrics.json layout)."""
    return {
        metric: {name: None if math.isnan(v) else round(float(v), 2) for name, v in zip(class_names, values)}
        for metric, values in per_class.items()
    }


def normalized_confusion_matrix(matrix: np.ndarray) -> np.ndarray:
    """Each row (a ground-truth class) divided by its pixel count; a class with no pixels gives NaN."""
    matrix = np.asarray(matrix, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return matrix / matrix.sum(axis=1, keepdims=True)


def write_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], out_dir: str | Path
) -> tuple[Path, Path, Path]:
    """`confusion_matrix.csv` (rows normalised), `confusion_matrix_counts.csv`, `confusion_matrix.png`.

    Rows are ground-truth classes, columns predicted classes; a row sums to 1 (ignored pixels and
    predictions outside the classes are not in the matrix).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    matrix = np.asarray(matrix)
    normalized = normalized_confusion_matrix(matrix)
    names = [str(n) for n in class_names]
    csv_path, counts_path, png_path = (
        out_dir / "confusion_matrix.csv",
        out_dir / "confusion_matrix_counts.csv",
        out_dir / "confusion_matrix.png",
    )
    for path, values, fmt in ((csv_path, normalized, "{:.6f}"), (counts_path, matrix, "{:d}")):
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["ground truth \\ prediction", *names])
            for name, row in zip(names, values):
                writer.writerow(
                    [
                        name,
                        *(
                            "" if isinstance(v, float) and math.isnan(v) else fmt.format(v)
                            for v in row.tolist()
                        ),
                    ]
                )
    confusion_matrix_image(normalized, names).save(png_path)
    return csv_path, counts_path, png_path


def confusion_matrix_image(normalized: np.ndarray, class_names: Sequence[str]) -> Image.Image:
    """A heat map of a row-normalised matrix: white (0) to dark blue (1), NaN rows grey.

    Cells shrink with the class count (at least 3 pixels); class names are drawn when a cell is
    at least 10 pixels, percentages when at least 28.
    """
    n = len(class_names)
    cell = int(min(40, max(3, 800 // max(n, 1))))
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    show_names = cell >= 10
    label_w = max((int(measure.textlength(str(s), font=font)) for s in class_names), default=0) + 8
    margin = label_w if show_names else 8
    title = "rows: ground truth, columns: prediction (each row sums to 100 %)"
    title_h = 20
    width = max(margin + n * cell + 8, int(measure.textlength(title, font=font)) + 8)
    height = title_h + margin + n * cell + 8
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), title, fill=(0, 0, 0), font=font)
    x0, y0 = margin, title_h + margin
    values = np.nan_to_num(normalized, nan=-1.0)
    for r in range(n):
        for c in range(n):
            v = values[r, c]
            if v < 0:
                colour = (200, 200, 200)
            else:
                colour = tuple(int(round(255 - v * (255 - t))) for t in (8, 48, 107))
            box = [x0 + c * cell, y0 + r * cell, x0 + (c + 1) * cell - 1, y0 + (r + 1) * cell - 1]
            draw.rectangle(box, fill=colour)
            if cell >= 28 and v >= 0:
                text = f"{v * 100:.0f}"
                draw.text(
                    (box[0] + 3, box[1] + cell // 3),
                    text,
                    fill=(255, 255, 255) if v > 0.5 else (0, 0, 0),
                    font=font,
                )
    if show_names:
        for k, name in enumerate(class_names):
            draw.text((4, y0 + k * cell + (cell - 10) // 2), str(name), fill=(0, 0, 0), font=font)
            label = Image.new("RGB", (label_w, cell), (255, 255, 255))
            ImageDraw.Draw(label).text((2, (cell - 10) // 2), str(name), fill=(0, 0, 0), font=font)
            canvas.paste(label.rotate(90, expand=True), (x0 + k * cell, title_h))
    return canvas
