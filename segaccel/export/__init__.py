"""Export a trained model out of PyTorch: ONNX (onnxruntime) or a torch.export ExportedProgram.

`export_model(model, out_dir, format=...)` traces `ExportGraph` (uint8 pixels + padding mask →
logits, normalisation inside) with a dynamic batch, height and width, writes the graph and the
`config.json` the runtime (`segaccel.deploy`) needs, and checks it against PyTorch before the folder
is put in place. `load_model` resolves what `scripts/export.py MODEL` names. This package uses the
models; the runtime in `segaccel.deploy` never does.
"""

from segaccel.export.exporter import DTYPES, ExportError, ExportResult, check_export, export_model, trace
from segaccel.export.graph import INPUT_NAMES, OUTPUT_NAMES, ExportGraph
from segaccel.export.source import ModelSource, load_model

__all__ = [
    "DTYPES",
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "ExportError",
    "ExportGraph",
    "ExportResult",
    "ModelSource",
    "check_export",
    "export_model",
    "load_model",
    "trace",
]
