"""segaccel: semantic segmentation with MMSegmentation's dataflow on the Hugging Face stack."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names, imported on first use so that `import segaccel` stays cheap.
_PUBLIC = {
    "PixelData": "segaccel.structures",
    "SegDataSample": "segaccel.structures",
    "Segmentor": "segaccel.models.segmentor",
    "SegDataPreProcessor": "segaccel.models.data_preprocessor",
    "inference_model": "segaccel.inference",
    "IoUMetric": "segaccel.evaluation.iou_metric",
    "MeanIoU": "segaccel.evaluation.mean_iou",
    "SegTTAModel": "segaccel.models.tta",
    "load_config": "segaccel.config",
    "load_synthetic_dataset": "segaccel.data.synthetic",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'segaccel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
