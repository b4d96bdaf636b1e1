"""Metrics for segmentation; registered in METRICS so configs can name them (`type: IoUMetric`)."""

from segaccel.evaluation.iou_metric import IoUMetric
from segaccel.registry import METRICS

METRICS.register(IoUMetric)

__all__ = ["IoUMetric"]
