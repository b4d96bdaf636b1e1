"""`MeanIoU`: IoUMetric as an `evaluate.EvaluationModule`, a drop-in for `evaluate.load("mean_iou")`.

`evaluate` fetches its metric scripts from the Hub at run time; this module is defined here, so it
works offline and needs no `evaluate.load`:

    from segaccel.evaluation import MeanIoU

    metric = MeanIoU()
    for preds, labels in batches:                    # (H, W) integer maps: arrays, tensors, lists
        metric.add_batch(predictions=preds, references=labels)
    metric.compute(num_labels=150, ignore_index=255, reduce_labels=False)
    # {"mean_iou": ..., "mean_accuracy": ..., "overall_accuracy": ..., "per_category_iou": ..., ...}

Inputs, compute arguments and results are those of evaluate's `mean_iou` (fractions in [0, 1],
not percentages): `label_map` is applied first, one pair after the other, as evaluate does, then
`reduce_labels` (0 and 255 become 255, every other label minus 1). Storage and the distributed
options (`num_process`, `process_id`, `keep_in_memory`, `cache_dir`) are evaluate's own; the
counting is IoUMetric's, so the areas are exactly those of IoUMetric and the formulas those of
evaluate's mean_iou: means over the classes that are not NaN, `nan_to_num` replacing NaN in the
results afterwards (IoUMetric, like MMSegmentation, replaces before averaging).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import torch

try:
    import evaluate
except ModuleNotFoundError as error:  # an optional extra: only MeanIoU needs it
    raise ImportError(
        "segaccel.evaluation.MeanIoU needs the `evaluate` package: pip install 'segaccel[evaluate]'"
    ) from error

from segaccel.evaluation.iou_metric import IoUMetric
from segaccel.structures import PixelData, SegDataSample

_DESCRIPTION = """\
Mean IoU, per-class IoU and accuracy and overall pixel accuracy of semantic segmentation maps,
with the definitions of MMSegmentation and of evaluate's mean_iou: the intersection, union,
prediction and label areas of each class are summed over all images before dividing; pixels
labelled `ignore_index` are left out; predictions outside [0, num_labels) count in no class.
"""

_INPUTS_DESCRIPTION = """
Args:
    predictions: predicted segmentation maps, each (height, width) of class indices.
    references: ground-truth maps of the same sizes.
    num_labels (`int`): number of classes.
    ignore_index (`int`): label left out of the evaluation (default 255).
    nan_to_num (`float`, optional): replaces NaN in the results (classes absent from both).
    label_map (`dict[int, int]`, optional): old label id -> new label id, applied first.
    reduce_labels (`bool`): 0 (background) and 255 become 255, other labels minus 1.
Returns:
    mean_iou, mean_accuracy, overall_accuracy (floats in [0, 1]); per_category_iou,
    per_category_accuracy (float64 arrays of num_labels values, NaN for absent classes).
"""

_CITATION = """\
@software{mmseg2020,
    title={{MMSegmentation}: OpenMMLab Semantic Segmentation Toolbox and Benchmark},
    author={MMSegmentation Contributors},
    howpublished={\\url{https://github.com/open-mmlab/mmsegmentation}},
    year={2020}
}
"""

_MAP = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))


class MeanIoU(evaluate.Metric):
    """evaluate's `mean_iou`, defined locally and counted by `IoUMetric`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features({"predictions": _MAP, "references": _MAP}),
            reference_urls=[
                "https://github.com/open-mmlab/mmsegmentation/blob/main/mmseg/evaluation/metrics/iou_metric.py",
                "https://huggingface.co/spaces/evaluate-metric/mean_iou",
            ],
        )

    def _compute(
        self,
        predictions: Sequence[Any],
        references: Sequence[Any],
        num_labels: int,
        ignore_index: int = 255,
        nan_to_num: float | None = None,
        label_map: Mapping[int, int] | None = None,
        reduce_labels: bool = False,
    ) -> dict[str, Any]:
        metric = IoUMetric(num_classes=int(num_labels), ignore_index=int(ignore_index))
        for i, (prediction, reference) in enumerate(zip(predictions, references)):
            prediction = _as_map(prediction, "predictions", i)
            reference = _map_labels(_as_map(reference, "references", i), label_map, reduce_labels)
            metric.process(
                [
                    SegDataSample(
                        {"img_id": f"references[{i}]"},
                        gt_sem_seg=PixelData(torch.from_numpy(reference)),
                        pred_sem_seg=PixelData(torch.from_numpy(prediction)),
                    )
                ]
            )
        areas = {k: v.astype(np.float64) for k, v in metric.total_areas().items()}
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = areas["intersect"] / areas["union"]
            accuracy = areas["intersect"] / areas["label"]
            overall = areas["intersect"].sum() / areas["label"].sum()
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a mean over only NaN is NaN, as in evaluate
            results: dict[str, Any] = {
                "mean_iou": np.nanmean(iou),
                "mean_accuracy": np.nanmean(accuracy),
                "overall_accuracy": overall,
                "per_category_iou": iou,
                "per_category_accuracy": accuracy,
            }
        if nan_to_num is not None:
            results = {k: np.nan_to_num(v, nan=nan_to_num) for k, v in results.items()}
        return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in results.items()}


def _as_map(value: Any, name: str, index: int) -> np.ndarray:
    array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim != 2 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"MeanIoU: {name}[{index}] must be a (height, width) map of integer class ids, got shape "
            f"{array.shape} and dtype {array.dtype}"
        )
    return np.ascontiguousarray(array, dtype=np.int64)


def _map_labels(label: np.ndarray, label_map: Mapping[int, int] | None, reduce_labels: bool) -> np.ndarray:
    """evaluate's order and manner: each `label_map` pair in turn (in place), then `reduce_labels`."""
    if label_map:
        label = label.copy()
        for old_id, new_id in label_map.items():
            label[label == int(old_id)] = int(new_id)
    if reduce_labels:
        label = np.where((label == 0) | (label == 255), 255, label - 1)
    return label
