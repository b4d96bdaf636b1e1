"""Exported-model runtime: segment images with an exported folder, no model code needed.

`segaccel.export` (scripts/export.py) writes a folder with the graph (`model.onnx` for onnxruntime,
or `model.pt2` for torch.export) and a `config.json` of what pre- and post-processing need;
`ExportedSegmentor` loads it and segments exactly as the PyTorch model does (whole or slide, resized
back to each image's size). This package never imports `segaccel.models`.
"""

from segaccel.deploy.backends import ExportedProgramBackend, OnnxRuntimeBackend, make_backend
from segaccel.deploy.config import CONFIG_NAME, FORMATS, ExportedConfig, is_exported_folder
from segaccel.deploy.preprocess import ExportedPreProcessor
from segaccel.deploy.segmentor import ExportedSegmentor

__all__ = [
    "CONFIG_NAME",
    "FORMATS",
    "ExportedConfig",
    "ExportedPreProcessor",
    "ExportedProgramBackend",
    "ExportedSegmentor",
    "OnnxRuntimeBackend",
    "is_exported_folder",
    "make_backend",
]
