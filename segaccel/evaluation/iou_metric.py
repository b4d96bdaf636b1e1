"""Semantic segmentation metrics (IoU, Acc, Dice, F-score) with MMSegmentation's semantics.

The state is one confusion matrix, summed over every processed pixel of the dataset (not averaged
per image), so memory does not grow with the dataset and summing the matrices of several
processes gives exactly the result of one process.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from segaccel.structures import SegDataSample

ALLOWED_METRICS = ("mIoU", "mDice", "mFscore")
MAX_HISTOGRAM_BINS = 2**22  # the CPU path's (labels x predictions) histogram; larger goes through torch


class IoUMetric:
    """Dataset-level IoU / Acc (and on request Dice, F-score, precision, recall), in percent.

    The state is an int64 `(C + 1, C + 1)` matrix on the device of the predictions: rows are labels,
    columns predictions, and the extra last row/column collects values outside `[0, C)` (other than
    `ignore_index`). So, exactly as MMSegmentation's `intersect_and_union`, a prediction outside
    the classes counts in no class's prediction area while its label still counts in the label
    area (a miss), and a label outside the classes still counts its prediction in the prediction
    area. `confusion_matrix` is the `(C, C)` block.

    Per class, each figure is NaN where its denominator is 0 (e.g. IoU of a class absent from both
    predictions and labels) and NaN is left out of the means; `nan_to_num` replaces NaN first.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        iou_metrics: Sequence[str] | str = ("mIoU",),
        nan_to_num: float | None = None,
        beta: float = 1,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"IoUMetric: num_classes must be a positive int, got {num_classes!r}")
        if isinstance(iou_metrics, str):
            iou_metrics = (iou_metrics,)
        unknown = [m for m in iou_metrics if m not in ALLOWED_METRICS]
        if unknown:
            raise ValueError(f"IoUMetric: unknown iou_metrics {unknown}; allowed: {list(ALLOWED_METRICS)}")
        if class_names is None:
            class_names = [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"IoUMetric: {len(class_names)} class_names given for num_classes={num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.iou_metrics = tuple(iou_metrics)
        self.nan_to_num = nan_to_num
        self.beta = beta
        self.class_names = [str(name) for name in class_names]
        # bincount index = label * (C + 1) + pred, with one more bin for ignored pixels.
        bins = (num_classes + 1) ** 2 + 1
        self._index_dtype = torch.int16 if bins <= torch.iinfo(torch.int16).max else torch.int32
        self._scratch: np.ndarray | None = None  # index buffers of the CPU path, sized by the largest image
        self.per_class: dict[str, np.ndarray] = {}
        self.summary_unrounded: dict[str, float] = {}
        self.reset()

    # --- state ----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every processed sample (the state stays on its device)."""
        device = self._state.device if hasattr(self, "_state") else "cpu"
        n = self.num_classes + 1
        self._state = torch.zeros((n, n), dtype=torch.int64, device=device)
        self.per_class = {}
        self.summary_unrounded = {}

    @property
    def confusion_matrix(self) -> np.ndarray:
        """`(C, C)` int64 counts: row = label, column = prediction (ignored pixels excluded)."""
        c = self.num_classes
        return self._state[:c, :c].cpu().numpy()

    def to(self, device: torch.device | str) -> IoUMetric:
        """Move the state to `device` (in place); returns self."""
        self._state = self._state.to(device)
        return self

    def all_reduce_(
        self, reduce_fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device | str | None = None
    ) -> None:
        """Replace the state by `reduce_fn(state)`, e.g. accelerate's sum-reduce across processes.

        Every process must call it, also one that processed no sample: its state is zeros on the
        CPU, so pass `device` (e.g. `accelerator.device`; NCCL reduces only GPU tensors).
        """
        if device is not None:
            self.to(device)
        reduced = reduce_fn(self._state)
        if not isinstance(reduced, torch.Tensor) or reduced.shape != self._state.shape:
            raise ValueError(
                f"IoUMetric.all_reduce_: reduce_fn must return a tensor of shape {tuple(self._state.shape)}, "
                f"got {getattr(reduced, 'shape', type(reduced).__name__)}"
            )
        self._state = reduced.to(torch.int64)

    # --- accumulation ---------------------------------------------------------------------------
    def process(self, data_samples: list[SegDataSample]) -> None:
        """Add the pixels of a batch of predicted samples (with `pred_sem_seg` and `gt_sem_seg`).

        On a GPU (any non-CPU device) the batch is one `torch.bincount` of `label * (C + 1) + pred`
        on the device. On the CPU see `_count_cpu`: a narrow index per sample, counted by
        `np.bincount` while it is in cache (faster there than one bincount over the whole batch).
        """
        if not data_samples:
            return
        pairs = [self._pred_and_label(sample) for sample in data_samples]  # checks every sample first
        if pairs[0][0].device.type == "cpu":
            counts = self._count_cpu(pairs)
        else:
            counts = self._count_torch(pairs)
        if self._state.device != counts.device:
            if self._state.any():
                counts = counts.to(self._state.device)
            else:  # nothing counted yet: follow the predictions' device
                self._state = self._state.to(counts.device)
        self._state += counts

    def _count_torch(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """`(C + 1, C + 1)` counts of a batch: one bincount of `label * (C + 1) + pred`, any values."""
        pred = torch.cat([pred.reshape(-1) for pred, _ in pairs])  # new tensors: the samples stay as they are
        label = torch.cat([label.reshape(-1).to(pred.device) for _, label in pairs])
        c = self.num_classes
        info = torch.iinfo(label.dtype)
        if info.min <= self.ignore_index <= info.max:
            ignored = label == self.ignore_index
        else:  # e.g. ignore_index=-1 with uint8 labels, where `== -1` would match 255
            ignored = torch.zeros_like(label, dtype=torch.bool)
        index = self._class_index(label).mul_(c + 1).add_(self._class_index(pred))
        index.masked_fill_(ignored, (c + 1) ** 2)
        counts = torch.bincount(index, minlength=(c + 1) ** 2 + 1)[: (c + 1) ** 2]
        return counts.view(c + 1, c + 1)

    def _count_cpu(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """`(C + 1, C + 1)` counts of a batch of CPU tensors, read once each, never copied whole.

        Per sample: if every label is in `[0, R)` (R = max(C, ignore_index) + 1) and every
        prediction in `[0, C]` — one `max` of the values seen as unsigned, which also catches
        negatives — both are narrowed to 16 bits, `label * (C + 1) + pred` indexes an `(R, C + 1)`
        histogram counted by `np.bincount`, and the histogram is folded at the end: label rows
        `C..R-1` become "other" (counted in the prediction area only), the `ignore_index` row is
        dropped. Any other sample (negative or large values) takes the exact `_count_torch` path.
        """
        c = self.num_classes
        rows = self._table_rows
        hist = np.zeros(rows * (c + 1) if rows else 0, dtype=np.int64)
        others = []
        for pred, label in pairs:
            label_u = _unsigned_values(label) if rows else None
            pred_u = _unsigned_values(pred) if rows else None
            if label_u is None or pred_u is None or label.device != pred.device:
                others.append((pred, label))
                continue
            if label_u.size and (int(label_u.max()) >= rows or int(pred_u.max()) > c):
                others.append((pred, label))
                continue
            n = label_u.size
            if self._scratch is None or self._scratch.shape[1] < n:
                self._scratch = np.empty((2, n), dtype=np.uint16 if rows * (c + 1) <= 2**16 else np.uint32)
            index, pred_index = self._scratch[0, :n], self._scratch[1, :n]
            np.copyto(index, label_u, casting="unsafe")  # exact: every value was checked to fit
            index *= c + 1
            np.copyto(pred_index, pred_u, casting="unsafe")
            index += pred_index
            hist += np.bincount(index, minlength=hist.size)
        counts = torch.zeros((c + 1, c + 1), dtype=torch.int64)
        if rows:
            table = hist.reshape(rows, c + 1)
            folded = counts.numpy()  # shares memory with `counts`
            folded[:c] = table[:c]
            folded[c] = table[c:].sum(axis=0)
            if 0 <= self.ignore_index < c:
                folded[self.ignore_index] = 0
            elif self.ignore_index >= c:
                folded[c] -= table[self.ignore_index]
        if others:
            counts += self._count_torch(others).cpu()
        return counts

    @property
    def _table_rows(self) -> int | None:
        """Label rows R of `_count_cpu`'s histogram, or None where it would be too big (huge ignore_index)."""
        rows = max(self.num_classes, self.ignore_index) + 1
        return rows if rows * (self.num_classes + 1) <= MAX_HISTOGRAM_BINS else None

    def _class_index(self, values: torch.Tensor) -> torch.Tensor:
        """Values in `[0, C)` as they are, every other value as `C`, in a narrow integer dtype."""
        inside = (values >= 0) & (values < self.num_classes)
        return values.to(self._index_dtype).masked_fill_(~inside, self.num_classes)

    @staticmethod
    def _pred_and_label(sample: SegDataSample) -> tuple[torch.Tensor, torch.Tensor]:
        name = sample.get("img_id", sample.get("img_path", "<no img_id>"))
        for field in ("pred_sem_seg", "gt_sem_seg"):
            if field not in sample:
                raise ValueError(f"IoUMetric: sample {name!r} has no {field}")
        pred, label = sample.pred_sem_seg.data, sample.gt_sem_seg.data
        for field, tensor in (("pred_sem_seg", pred), ("gt_sem_seg", label)):
            if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
                raise TypeError(
                    f"IoUMetric: sample {name!r}: {field} must hold integer class indices, got {tensor.dtype}"
                )
        if pred.shape != label.shape:
            raise ValueError(
                f"IoUMetric: sample {name!r}: pred_sem_seg has shape {tuple(pred.shape)} but gt_sem_seg "
                f"has shape {tuple(label.shape)}; predictions must be at the label's size (ori_shape)"
            )
        return pred, label

    # --- results --------------------------------------------------------------------------------
    def total_areas(self) -> dict[str, np.ndarray]:
        """Dataset-level per-class pixel counts, int64 `(C,)` each: `intersect`, `union`, `pred`, `label`.

        MMSegmentation's `total_area_intersect/union/pred_label/label`: `pred` counts every
        non-ignored pixel predicted as the class (whatever its label), `label` every pixel
        labelled as the class (whatever its prediction), `union = pred + label - intersect`.
        """
        counts = self._state.cpu().numpy()
        c = self.num_classes
        intersect = np.diag(counts)[:c].copy()
        area_pred = counts[:, :c].sum(axis=0)
        area_label = counts[:c, :].sum(axis=1)
        return {
            "intersect": intersect,
            "union": area_pred + area_label - intersect,
            "pred": area_pred,
            "label": area_label,
        }

    def compute(self) -> dict[str, float]:
        """The summary in percent, rounded to 2 decimals as MMSegmentation reports it.

        Keys: `aAcc`, then per requested metric `mIoU`, `mAcc`, `mDice`, `mFscore`, `mPrecision`,
        `mRecall`. Unrounded values are kept on `summary_unrounded` and `per_class`.
        """
        intersect, union, area_pred, area_label = (v.astype(np.float64) for v in self.total_areas().values())

        with np.errstate(divide="ignore", invalid="ignore"):
            fractions: dict[str, np.ndarray] = {"aAcc": np.asarray(intersect.sum() / area_label.sum())}
            for metric in self.iou_metrics:
                if metric == "mIoU":
                    fractions["IoU"] = intersect / union
                    fractions["Acc"] = intersect / area_label
                elif metric == "mDice":
                    fractions["Dice"] = 2 * intersect / (area_pred + area_label)
                    fractions["Acc"] = intersect / area_label
                elif metric == "mFscore":
                    precision = intersect / area_pred
                    recall = intersect / area_label
                    beta2 = self.beta**2
                    fractions["Fscore"] = (1 + beta2) * (precision * recall) / (beta2 * precision + recall)
                    fractions["Precision"] = precision
                    fractions["Recall"] = recall
        if self.nan_to_num is not None:
            fractions = {k: np.nan_to_num(v, nan=self.nan_to_num) for k, v in fractions.items()}

        with warnings.catch_warnings():  # a mean over all-NaN is NaN, without a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            means = {k: float(np.nanmean(v) * 100) for k, v in fractions.items()}
        self.summary_unrounded = {(k if k == "aAcc" else "m" + k): v for k, v in means.items()}
        self.per_class = {k: v * 100 for k, v in fractions.items() if k != "aAcc"}
        return {k: float(np.round(v, 2)) for k, v in self.summary_unrounded.items()}

    def results_table(self) -> str:
        """A per-class table (class name and each per-class figure, 2 decimals), after `compute()`."""
        if not self.per_class:
            raise RuntimeError("IoUMetric.results_table() needs compute() first")
        header = ["Class", *self.per_class]
        rows = [
            [name, *(f"{values[i]:.2f}" for values in self.per_class.values())]
            for i, name in enumerate(self.class_names)
        ]
        widths = [max(len(str(r[j])) for r in (header, *rows)) for j in range(len(header))]
        rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(str(cell).center(w) for cell, w in zip(cells, widths)) + " |"

        return "\n".join([rule, line(header), rule, *(line(r) for r in rows), rule])

    def __repr__(self) -> str:
        return (
            f"IoUMetric(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"iou_metrics={self.iou_metrics}, nan_to_num={self.nan_to_num}, beta={self.beta})"
        )


def _unsigned_values(values: torch.Tensor) -> np.ndarray | None:
    """The flattened values as a numpy view of unsigned ints (negatives become huge), or None.

    Signed bytes are widened first: as unsigned bytes, -1 would read 255, a valid ignore_index.
    """
    array = values.reshape(-1).numpy()
    if array.dtype.kind == "u":
        return array
    if array.dtype.kind != "i":
        return None
    if array.itemsize == 1:
        array = array.astype(np.int16)
    return array.view(f"u{array.itemsize}")
