"""Export a `Segmentor` to ONNX or a torch.export ExportedProgram, checked against PyTorch.

    torch.export (dynamic batch, height and width) ─► model.pt2            (--format exported-program)
                                                  └► torch.onnx ─► model.onnx  (--format onnx)

The graph is `ExportGraph`: uint8 pixels and a padding mask in, float32 logits at the input size
out, normalisation inside. Height and width are traced as symbols (`Dim.AUTO`): a model whose code
pins them (an `int()` of a size, a branch on a size) fails the export with the offending dimension
named rather than silently exporting one size. Beside the graph go `config.json` (what pre- and
post-processing need, `segaccel.deploy.config`) and, when the source has them, the training
`config.yaml` and `metrics.json` (so `scripts/test.py EXPORTED_DIR` finds its dataset).

Before the folder is put in place, the written graph is run by the runtime that will serve it
(onnxruntime, or torch.export.load) on a random input of another non-square size than the traced
one, and compared with the PyTorch model; the maximum difference is printed and recorded, and an
export beyond the tolerance is refused. The folder is written atomically: a failed or interrupted
export leaves the previous one as it was.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import segaccel
from segaccel.deploy.backends import make_backend
from segaccel.deploy.config import CONFIG_NAME, EXPORT_FORMAT_VERSION, FORMATS
from segaccel.export.graph import INPUT_NAMES, OUTPUT_NAMES, ExportGraph

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16}
TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-2}  # max |runtime - PyTorch| / max(1, max |logits|)
EXPORTED_FILES = (CONFIG_NAME, *FORMATS.values(), "model.onnx.data", "config.yaml", "metrics.json")


class ExportError(RuntimeError):
    """The model cannot be exported as asked (a pinned dimension, a failed parity check, ...)."""


@dataclass
class ExportResult:
    """What `export_model` wrote and measured."""

    out_dir: Path
    format: str
    dtype: str
    max_abs_diff: float
    check_shape: tuple[int, ...]
    input_range: dict[str, list[int | None]]
    seconds: float


def export_model(
    model: torch.nn.Module,
    out_dir: str | Path,
    *,
    format: str = "onnx",
    dtype: str | torch.dtype = "float32",
    example_size: Sequence[int] | None = None,
    check_size: Sequence[int] | None = None,
    extra_dir: str | Path | None = None,
    opset: int | None = None,
    check: bool = True,
) -> ExportResult:
    """Export `model` (a `Segmentor`) into the folder `out_dir` and check it; see the module docstring.

    Args:
        format: `onnx` (`model.onnx`, run by onnxruntime) or `exported-program` (`model.pt2`).
        dtype: `float32` or `float16` (the network's dtype; inputs stay uint8, logits float32).
        example_size: the `(h, w)` traced (default: a non-square size the network takes).
        check_size: the `(h, w)` of the parity check (default: another non-square size).
        extra_dir: a folder whose `config.yaml`/`metrics.json` are copied beside the graph.
        opset: ONNX opset (default: the exporter's).
        check: run the parity check (on by default; the export fails beyond the tolerance).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    torch_dtype = DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if torch_dtype not in TOLERANCE:
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    from segaccel.engine.atomic import write_files_atomically

    start = time.perf_counter()
    out_dir = Path(out_dir)
    was_training = model.training
    model.eval()
    try:
        min_hw = _min_input_size(model)
        net = model if torch_dtype == torch.float32 else copy.deepcopy(model).to(torch_dtype)
        graph = ExportGraph(net, torch_dtype).eval()
        example_hw = tuple(example_size or _default_size(min_hw, 0))
        check_hw = tuple(check_size or _default_size(min_hw, 1))
        result: dict[str, Any] = {}

        def write(folder: Path) -> None:
            program = trace(graph, example_hw, channels=graph.mean.shape[1])
            input_range = _input_range(program)
            graph_file = folder / FORMATS[format]
            if format == "onnx":
                _save_onnx(program, graph, example_hw, graph_file, opset)
            else:
                torch.export.save(program, str(graph_file))
            config = export_config(model, format, torch_dtype, input_range, min_hw, opset)
            if check:
                diff, shape = check_export(graph, format, graph_file, check_hw, input_range, min_hw)
                config["export"]["check"] = {"input_shape": list(shape), "max_abs_diff": diff}
                result.update(diff=diff, shape=shape)
            text = json.dumps(config, indent=2, sort_keys=True) + "\n"
            (folder / CONFIG_NAME).write_text(text, encoding="utf-8")
            for name in ("config.yaml", "metrics.json"):
                if extra_dir is not None and (Path(extra_dir) / name).is_file():
                    shutil.copy2(Path(extra_dir) / name, folder / name)
            result["input_range"] = input_range

        write_files_atomically(out_dir, write, owned=EXPORTED_FILES)
    finally:
        model.train(was_training)
    return ExportResult(
        out_dir=out_dir,
        format=format,
        dtype=str(torch_dtype).removeprefix("torch."),
        max_abs_diff=result.get("diff", math.nan),
        check_shape=tuple(result.get("shape", ())),
        input_range=result["input_range"],
        seconds=time.perf_counter() - start,
    )


def trace(graph: ExportGraph, example_hw: Sequence[int], channels: int = 3) -> torch.export.ExportedProgram:
    """`torch.export` of `graph` with a dynamic batch, height and width (an `ExportError` if pinned)."""
    h, w = (int(s) for s in example_hw)
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (2, channels, h, w), dtype=torch.uint8, generator=g)
    mask = torch.ones((2, h, w), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1)
    auto = torch.export.Dim.AUTO
    shapes = {"pixel_values": {0: batch, 2: auto, 3: auto}, "pixel_mask": {0: batch, 1: auto, 2: auto}}
    with torch.no_grad():
        try:
            program = torch.export.export(graph, (pixels, mask), dynamic_shapes=shapes, strict=False)
        except Exception as exc:
            raise ExportError(f"torch.export failed for a dynamic batch, height and width: {exc}") from exc
    shape = _input_shape(program)
    names = ("batch", "channels", "height", "width")
    pinned = [n for n, dim in zip(names, shape) if _static(dim) is not None and n != "channels"]
    if pinned:
        raise ExportError(
            f"the model's code pins the input {' and '.join(pinned)} to the traced size {tuple(shape)}: "
            "rewrite the size-dependent code (no int() of a size, no Python branch on a size) to export it"
        )
    bounded = {k: v for k, v in _input_range(program).items() if k != "batch" and v[1] is not None}
    if bounded:
        ranges = ", ".join(f"{k} {lo}..{hi}" for k, (lo, hi) in bounded.items())
        raise ExportError(
            f"the model's code limits the input to {ranges} around the traced size {tuple(shape)}: a size "
            "derived from the input is turned into a Python int (int(), torch.tensor of sizes) somewhere"
        )
    return program


def check_export(
    graph: ExportGraph,
    fmt: str,
    graph_file: Path,
    check_hw: Sequence[int],
    input_range: dict[str, list[int | None]],
    min_hw: Sequence[int] | None,
) -> tuple[float, tuple[int, ...]]:
    """Run the written graph with its runtime on a random input and compare with PyTorch.

    Returns the max absolute difference of the logits and the input shape; raises `ExportError` when
    it exceeds the dtype's tolerance (relative to the largest logit, at least 1). A tenth of the
    input is marked as padding, so the mask path is checked too.
    """
    lowest = [(input_range.get(k) or [1])[0] or 1 for k in ("height", "width")]
    h, w = (max(int(s), int(low)) for s, low in zip(check_hw, lowest))
    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (1, graph.mean.shape[1], h, w), dtype=torch.uint8, generator=g)
    mask = torch.ones((1, h, w), dtype=torch.uint8)
    mask[:, :, w - max(1, w // 10) :] = 0
    with torch.no_grad():
        expected = graph(pixels, mask).float()
    backend = make_backend(fmt, graph_file, providers=["CPUExecutionProvider"] if fmt == "onnx" else None)
    got = backend(pixels, mask)
    if got.shape != expected.shape:
        raise ExportError(
            f"the exported graph gave logits of shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)}"
        )
    diff = float((got - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    tolerance = TOLERANCE[graph.dtype] * scale
    print(
        f"export check ({fmt}, {str(graph.dtype).removeprefix('torch.')}, input {tuple(pixels.shape)}): "
        f"max |{backend.name} - PyTorch| = {diff:.3g} (tolerance {tolerance:.3g})"
    )
    if not diff <= tolerance:
        raise ExportError(
            f"the exported graph differs from PyTorch by {diff:.3g} (> {tolerance:.3g}) on a "
            f"{tuple(pixels.shape)} input: not written"
        )
    return diff, tuple(pixels.shape)


def export_config(
    model: torch.nn.Module,
    fmt: str,
    dtype: torch.dtype,
    input_range: dict[str, list[int | None]],
    min_hw: Sequence[int] | None,
    opset: int | None,
) -> dict[str, Any]:
    """The exported folder's `config.json` (see `segaccel.deploy.config`)."""
    pre = model.data_preprocessor
    source = model.config_for_saving() if hasattr(model, "config_for_saving") else dict(model.config)
    pre_cfg = source.get("data_preprocessor") or {}
    head = model.decode_head
    return {
        "format_version": EXPORT_FORMAT_VERSION,
        "export": {
            "format": fmt,
            "file": FORMATS[fmt],
            "dtype": str(dtype).removeprefix("torch."),
            "inputs": list(INPUT_NAMES),
            "outputs": list(OUTPUT_NAMES),
            "in_channels": int(pre.mean.shape[0]) if getattr(pre, "normalize", True) else 3,
            "input_range": input_range,
            "opset": opset,
            "torch_version": torch.__version__,
            "segaccel_version": segaccel.__version__,
        },
        "num_classes": int(model.num_classes),
        "out_channels": int(model.out_channels),
        "threshold": getattr(head, "threshold", None),
        "align_corners": bool(model.align_corners),
        "id2label": source.get("id2label"),
        "label2id": source.get("label2id"),
        "palette": source.get("palette"),
        "test_cfg": source.get("test_cfg") or {"mode": "whole"},
        "test_pipeline": source.get("test_pipeline"),
        "data_preprocessor": {
            "mean": pre_cfg.get("mean"),
            "std": pre_cfg.get("std"),
            "channel_order": getattr(pre, "channel_order", "rgb"),
            "pad_val": float(getattr(pre, "pad_val", 0)),
            "test_cfg": pre_cfg.get("test_cfg"),
        },
        "min_input_size": list(min_hw) if min_hw else None,
        "source_model": source,
    }


def _save_onnx(
    program: torch.export.ExportedProgram,
    graph: ExportGraph,
    example_hw: Sequence[int],
    path: Path,
    opset: int | None,
) -> None:
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as exc:
        raise ImportError("exporting to ONNX needs onnxscript: pip install 'segaccel[onnx]'") from exc
    h, w = example_hw
    pixels = torch.zeros((2, graph.mean.shape[1], h, w), dtype=torch.uint8)
    args = (pixels, torch.ones((2, h, w), dtype=torch.uint8))
    kwargs: dict[str, Any] = {"opset_version": opset} if opset else {}
    onnx_program = torch.onnx.export(
        program,
        args,
        dynamo=True,
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        verbose=False,
        **kwargs,
    )
    onnx_program.save(str(path))


def _input_shape(program: torch.export.ExportedProgram) -> list[int | torch.SymInt]:
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    return list(node.meta["val"].shape)


def _static(dim: int | torch.SymInt) -> int | None:
    """The size of a traced dimension when it is a constant (pinned), else None."""
    if isinstance(dim, int):
        return dim
    expr = dim.node.expr
    return int(expr) if expr.is_number else None


def _input_range(program: torch.export.ExportedProgram) -> dict[str, list[int | None]]:
    """`{batch, height, width: [min, max]}` of the traced program (`max` None when unbounded)."""
    out = {}
    for name, dim in zip(("batch", "channels", "height", "width"), _input_shape(program)):
        if name == "channels":
            continue
        if _static(dim) is not None:
            out[name] = [_static(dim), _static(dim)]
            continue
        bounds = program.range_constraints.get(dim.node.expr)
        lower = int(bounds.lower) if bounds is not None else 1
        upper = bounds.upper if bounds is not None else None
        bounded = upper is not None and getattr(upper, "is_Integer", False)  # not torch's int_oo
        out[name] = [lower, int(upper) if bounded else None]
    return out


def _min_input_size(model: torch.nn.Module) -> tuple[int, int] | None:
    probe = getattr(model, "min_input_size", None)
    if not callable(probe):
        return None
    hw = probe()
    return (int(hw[0]), int(hw[1])) if hw is not None else None


def _default_size(min_hw: Sequence[int] | None, which: int) -> tuple[int, int]:
    """Two different non-square sizes the network takes (h < w, then h > w): traced, then checked.

    Large enough that no count the network derives from the size is 1 at the traced size (Swin's
    windows per row at stride 32, say): the tracer would take such a 1 for a constant (a broadcast).
    """
    base = max(512, *(min_hw or (0,)))
    return (base + 32, base + 64) if which == 0 else (base + 56, base + 40)
