"""Metrics for segmentation; registered in METRICS so configs can name them (`type: IoUMetric`).

`MeanIoU` (the `evaluate.EvaluationModule` adapter) is imported on first use: `evaluate` is slow to
import and the training and test loops do not need it.
"""

from typing import Any

from segaccel.evaluation.iou_metric import IoUMetric
from segaccel.registry import METRICS

METRICS.register(IoUMetric)

__all__ = ["IoUMetric", "MeanIoU"]


def __getattr__(name: str) -> Any:
    if name == "MeanIoU":
        from segaccel.evaluation.mean_iou import MeanIoU

        return MeanIoU
    raise AttributeError(f"module 'segaccel.evaluation' has no attribute {name!r}")
