"""Runners of an exported graph: onnxruntime (`model.onnx`) or torch.export (`model.pt2`).

Each is called as `backend(pixel_values uint8 (N, C, H, W), pixel_mask uint8 (N, H, W))` with torch
CPU tensors and returns float32 logits `(N, out_channels, H, W)` as a torch CPU tensor. Neither needs
segaccel's model code: the ONNX graph runs in onnxruntime, the ExportedProgram in torch alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


class OnnxRuntimeBackend:
    """An onnxruntime `InferenceSession` over `model.onnx`.

    Args:
        path: the `.onnx` file.
        providers: onnxruntime execution providers (default: the CUDA provider when this
            onnxruntime has it, then the CPU provider).
        threads: `intra_op_num_threads` (default: onnxruntime's, one per core).
    """

    name = "onnxruntime"

    def __init__(
        self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError(
                "running an exported ONNX model needs onnxruntime: pip install 'segaccel[deploy]'"
            ) from exc
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
        feed: dict[str, Any] = {"pixel_values": _numpy(pixel_values)}
        if "pixel_mask" in self.input_names:
            feed["pixel_mask"] = _numpy(pixel_mask)
        (logits,) = self.session.run([self.output_name], feed)
        return torch.from_numpy(np.asarray(logits, dtype=np.float32))


class ExportedProgramBackend:
    """A `torch.export` ExportedProgram (`model.pt2`), loaded with `torch.export.load`.

    It takes heights and widths from the traced minimum on (`export.input_range` in config.json);
    `ExportedSegmentor` pads smaller inputs up to it.

    Args:
        path: the `.pt2` file.
        device: where it runs (default: the CPU).
    """

    name = "torch.export"

    def __init__(self, path: str | Path, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or "cpu")
        program = torch.export.load(str(path))
        # Without the trace's guards: they record layout facts of the traced size (a conv's `size > 1`
        # memory-format test, a view's contiguity), not the computation, which the exporter checks at
        # another size. The traced range of each dimension is still enforced.
        if "check_guards" in inspect.signature(program.module).parameters:
            self.module = program.module(check_guards=False).to(self.device)
        else:  # a torch without the switch
            self.module = program.module().to(self.device)

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
        logits = self.module(pixel_values.to(self.device), pixel_mask.to(self.device))
        return logits.float().cpu()


def make_backend(
    fmt: str,
    path: str | Path,
    *,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    device: str | torch.device | None = None,
) -> OnnxRuntimeBackend | ExportedProgramBackend:
    """The backend for an export `fmt` (`onnx` or `exported-program`) reading `path`."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no exported graph at {path}")
    if fmt == "onnx":
        return OnnxRuntimeBackend(path, providers=providers, threads=threads)
    if fmt == "exported-program":
        return ExportedProgramBackend(path, device=device)
    raise ValueError(f"unknown export format {fmt!r}: expected onnx or exported-program")


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy())
