"""Data: Hugging Face datasets, per-sample transforms, packing and batching, the synthetic dataset."""

from segaccel.data.builder import build_dataset, dataset_from_config
from segaccel.data.classes import dataset_id2label
from segaccel.data.collate import seg_collate
from segaccel.data.rows import SampleError, map_labels
from segaccel.data.seg_dataset import SegDataset
from segaccel.data.sources import SYNTHETIC_PATH, build_hf_dataset
from segaccel.data.streaming import SegStreamDataset
from segaccel.data.synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_PALETTE,
    load_synthetic_dataset,
    synthetic_id2label,
)
from segaccel.data.transforms import (
    Compose,
    LoadAnnotations,
    PackSegInputs,
    Pad,
    PhotoMetricDistortion,
    RandomChoiceResize,
    RandomCrop,
    RandomCutOut,
    RandomFlip,
    RandomResize,
    RandomRotate,
    Resize,
    ResizeShortestEdge,
    RGB2Gray,
    init_results,
)
from segaccel.registry import TRANSFORMS

TRANSFORMS.register(
    Compose,
    LoadAnnotations,
    Resize,
    RandomResize,
    RandomChoiceResize,
    ResizeShortestEdge,
    RandomCrop,
    RandomFlip,
    RandomRotate,
    Pad,
    PhotoMetricDistortion,
    RandomCutOut,
    RGB2Gray,
    PackSegInputs,
)

__all__ = [
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_PALETTE",
    "SYNTHETIC_PATH",
    "Compose",
    "LoadAnnotations",
    "PackSegInputs",
    "Pad",
    "PhotoMetricDistortion",
    "RGB2Gray",
    "RandomChoiceResize",
    "RandomCrop",
    "RandomCutOut",
    "RandomFlip",
    "RandomResize",
    "RandomRotate",
    "Resize",
    "ResizeShortestEdge",
    "SampleError",
    "SegDataset",
    "SegStreamDataset",
    "build_dataset",
    "build_hf_dataset",
    "dataset_from_config",
    "dataset_id2label",
    "init_results",
    "load_synthetic_dataset",
    "map_labels",
    "seg_collate",
    "synthetic_id2label",
]
