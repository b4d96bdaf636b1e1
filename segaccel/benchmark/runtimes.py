"""`benchmark infer --runtime onnxruntime eager compile`: one network, three runtimes, side by side.

Each runtime computes the same thing, the exported graph (`segaccel.export.ExportGraph`: uint8 pixels
and padding mask → logits at the input size, normalisation included) on `--batch` images of
`--whole-size`:

- `eager`: the PyTorch module under `torch.inference_mode`;
- `compile`: `torch.compile` of it (inductor; compiled during the warm-up);
- `onnxruntime`: the graph exported to ONNX (`segaccel.export.export_model`, parity-checked) run by an
  onnxruntime session with as many intra-op threads as torch uses.

Throughput: every runtime warmed up, then timed calls take turns between them (a change in the
machine's load hits all alike); the median of `--steps`. Memory: each runtime in a fresh process
(spawned), the growth of the peak resident set from the loaded model to the end of its warm-up and one
timed call, so allocations a runtime keeps between calls (onnxruntime's arena) count. CPU only for
onnxruntime here (the CPU execution provider).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from segaccel.benchmark.memory import reset_cpu_peak, status_kib
from segaccel.benchmark.table import format_table

RUNTIMES = ("onnxruntime", "eager", "compile")


def build_runner(
    runtime: str, model: torch.nn.Module, onnx_dir: Path | None, threads: int
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`fn(pixel_values, pixel_mask) -> logits` of `runtime` for a built `Segmentor` (eval mode)."""
    from segaccel.export.graph import ExportGraph

    if runtime == "onnxruntime":
        from segaccel.deploy.backends import OnnxRuntimeBackend

        cpu = ["CPUExecutionProvider"]
        return OnnxRuntimeBackend(onnx_dir / "model.onnx", providers=cpu, threads=threads)
    graph = ExportGraph(model).eval()
    fn = torch.compile(graph) if runtime == "compile" else graph

    def run(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(pixels, mask)

    return run


def _model(config: str, num_classes: int | None) -> torch.nn.Module:
    from segaccel.benchmark.train import build_ours, model_config

    args = argparse.Namespace(config=config, cfg_options=[], num_classes=num_classes, vs=None)
    torch.manual_seed(0)
    return build_ours(model_config(args)).eval()


def _inputs(batch: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8, generator=g)
    return pixels, torch.ones((batch, *size), dtype=torch.uint8)


def _peak_in_fresh_process(params: dict[str, Any], queue: Any) -> None:
    """Child: load the runtime, reset the peak RSS, warm up and call once; report the growth (MiB)."""
    torch.set_num_threads(params["threads"])
    model = _model(params["config"], params["num_classes"])
    run = build_runner(params["runtime"], model, params["onnx_dir"], params["threads"])
    pixels, mask = _inputs(params["batch"], params["size"])
    base = reset_cpu_peak()
    for _ in range(params["warmup"] + 1):
        run(pixels, mask)
    peak = status_kib("VmHWM")
    queue.put(None if base is None or peak is None else (peak - base) / 1024)


def peak_memory(params: dict[str, Any]) -> float | None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_in_fresh_process, args=(params, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"the {params['runtime']} memory measurement failed (exit code {proc.exitcode})")
    return queue.get()


def run_runtimes(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Images/s and peak memory of each `args.runtime`, side by side (see the module docstring)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    size = tuple(args.whole_size)
    model = _model(args.config, args.num_classes)
    pixels, mask = _inputs(args.batch, size)
    with tempfile.TemporaryDirectory(prefix="segaccel-bench-") as tmp:
        onnx_dir = None
        if "onnxruntime" in args.runtime:
            from segaccel.export import export_model

            onnx_dir = Path(tmp) / "onnx"
            result = export_model(model, onnx_dir, format="onnx", check_size=(size[0] // 2 + 8, size[1] // 2))
            diff = result.max_abs_diff
            print(f"exported to ONNX in {result.seconds:.0f} s (max |onnxruntime - PyTorch| {diff:.2g})")
        runners = [build_runner(name, model, onnx_dir, threads) for name in args.runtime]
        for name, run in zip(args.runtime, runners):
            start = time.perf_counter()
            for _ in range(args.warmup):
                run(pixels, mask)
            print(f"{name}: warm-up ({args.warmup} calls) {time.perf_counter() - start:.1f} s")
        times: list[list[float]] = [[] for _ in runners]
        for _ in range(args.steps):
            for run, out in zip(runners, times):
                start = time.perf_counter()
                run(pixels, mask)
                out.append(time.perf_counter() - start)
        params = dict(
            config=args.config,
            num_classes=args.num_classes,
            threads=threads,
            batch=args.batch,
            size=size,
            warmup=args.warmup,
            onnx_dir=onnx_dir,
        )
        peaks = [peak_memory({**params, "runtime": name}) for name in args.runtime]
    rows = []
    for name, ts, peak in zip(args.runtime, times, peaks):
        seconds = statistics.median(ts)
        rows.append(
            {
                "runtime": name,
                "input": f"{args.batch}x3x{size[0]}x{size[1]} uint8",
                "s/batch (median)": round(seconds, 3),
                "images/s": round(args.batch / seconds, 2),
                "peak MiB": None if peak is None else round(peak, 1),
                "_seconds": seconds,
            }
        )
    ref = next((r for r in rows if r["runtime"] == "eager"), rows[0])
    ref_name, ref_seconds = ref["runtime"], ref["_seconds"]
    for row in rows:
        row[f"speed vs {ref_name}"] = f"{ref_seconds / row.pop('_seconds'):.2f}x"
    print(
        f"{args.config}: {model.num_classes} classes, CPU, torch {torch.__version__}, {threads} threads; "
        f"median of {args.steps} after {args.warmup} warm-up, calls alternating; peak MiB: growth of the "
        "peak RSS over the loaded model, fresh process each"
    )
    print(format_table(rows))
    return rows
