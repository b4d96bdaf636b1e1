"""Data: Hugging Face datasets, per-sample transforms, packing and batching, the synthetic dataset."""

from segaccel.data.collate import seg_collate
from segaccel.data.datasets import (
    SYNTHETIC_PATH,
    SampleError,
    SegDataset,
    build_dataset,
    build_hf_dataset,
    dataset_id2label,
    map_labels,
)
from segaccel.data.formatting import PackSegInputs
from segaccel.data.synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_PALETTE,
    load_synthetic_dataset,
    synthetic_id2label,
)
from segaccel.data.transforms import (
    Compose,
    LoadAnnotations,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    RandomResize,
    Resize,
    init_results,
)
from segaccel.registry import TRANSFORMS

TRANSFORMS.register(
    Compose,
    LoadAnnotations,
    Resize,
    RandomResize,
    RandomCrop,
    RandomFlip,
    PhotoMetricDistortion,
    PackSegInputs,
)

__all__ = [
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_PALETTE",
    "SYNTHETIC_PATH",
    "Compose",
    "LoadAnnotations",
    "PackSegInputs",
    "PhotoMetricDistortion",
    "RandomCrop",
    "RandomFlip",
    "RandomResize",
    "Resize",
    "SampleError",
    "SegDataset",
    "build_dataset",
    "build_hf_dataset",
    "dataset_id2label",
    "init_results",
    "load_synthetic_dataset",
    "map_labels",
    "seg_collate",
    "synthetic_id2label",
]
