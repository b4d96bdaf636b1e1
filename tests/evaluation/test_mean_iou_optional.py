"""`evaluate` is an optional extra: without it `MeanIoU` says what to install, and the rest works."""

import importlib
import sys

import pytest


def test_mean_iou_without_evaluate_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "evaluate", None)  # `import evaluate` now fails as if not installed
    monkeypatch.delitem(sys.modules, "segaccel.evaluation.mean_iou", raising=False)
    import segaccel.evaluation

    with pytest.raises(ImportError, match=r"pip install 'segaccel\[evaluate\]'"):
        segaccel.evaluation.MeanIoU  # noqa: B018
    with pytest.raises(ImportError, match="needs the `evaluate` package"):
        importlib.import_module("segaccel.evaluation.mean_iou")
    assert segaccel.evaluation.IoUMetric(num_classes=2).num_classes == 2  # IoUMetric needs no evaluate
