"""The GPU check: every CUDA path of the engine in one run, summed up in one Markdown table.

    bash scripts/gpu_check.sh [--out DIR] [--budget SECONDS]

Made for the day a GPU machine is at hand (it needs nothing but this clone, installed, and the
built-in synthetic dataset); on one GPU it ends within `--budget` seconds (default 470, under 8
minutes). Each check is its own process with its own time limit, so one that fails or hangs is
reported and the others still run:

- training steps of the quickstart under bf16 and under fp16 (steps skipped by the grad scaler
  counted: `overflow_skipped` of the run's `scalars.jsonl`), each ending with a validation;
- with two GPUs or more, DDP on two processes, where the SegFormer head's BN becomes SyncBN;
- FSDP2 (`accelerate_configs/fsdp2.yaml`) on every GPU available (one GPU: a world of one);
- `scripts/benchmark.py train --device cuda` (bf16) for SegFormer-B0 with and without `compile:`
  and for a ViT-B (UperNet, 512x512) with and without `with_cp`, with the "% matmul peak" (MFU);
- `scripts/benchmark.py infer --speed --device cuda` for the same two models.

Without a CUDA device it writes and prints that the check was not run, and exits 0. The table goes
to `DIR/gpu_check.md` (default `work_dirs/gpu_check`), each check's output to `DIR/<name>.log`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segaccel.benchmark.table import markdown_table

QUICKSTART = "configs/quickstart.yaml"
SEGFORMER_B0 = "configs/segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.yaml"
VIT_B = "configs/vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.yaml"
BUDGET = 470.0  # seconds for all checks (each is also bounded by its own limit)
# a short quickstart run: 200 steps, a validation and a checkpoint at the end, a log line every 20
SHORT_RUN = [
    "train_cfg.max_iters=200",
    "train_cfg.val_interval=200",
    "default_hooks.logger.interval=20",
    "default_hooks.checkpoint.interval=200",
]


@dataclass
class Check:
    """One command of the check: a training run (`work_dir` set) or a benchmark (`rows` set)."""

    name: str
    argv: list[str]
    timeout: float
    work_dir: Path | None = None
    rows: Path | None = None


@dataclass
class Result:
    """What one check gave: `status` ok / failed (exit code) / timed out / skipped, and its figures."""

    check: Check
    status: str
    seconds: float
    summary: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)


def plan(num_gpus: int, out: Path, python: str = sys.executable) -> list[Check]:
    """The checks for `num_gpus` CUDA devices, in the order they run."""
    launch = [python, "-m", "accelerate.commands.launch"]

    def train(name: str, extra: list[str], precision: str, timeout: float) -> Check:
        work = out / name
        script = ["scripts/train.py", QUICKSTART, "--work-dir", str(work), "--mixed_precision", precision]
        return Check(name, [*launch, *extra, *script, *SHORT_RUN], timeout, work_dir=work)

    def bench(name: str, args: list[str], timeout: float) -> Check:
        rows = out / f"{name}.json"
        return Check(
            name, [python, "scripts/benchmark.py", *args, "--json-file", str(rows)], timeout, rows=rows
        )

    one = ["--num_processes", "1", "--num_machines", "1", "--dynamo_backend", "no"]
    checks = [
        train("train-bf16", one, "bf16", 90),
        train("train-fp16", one, "fp16", 90),
    ]
    if num_gpus >= 2:  # the SegFormer head's BN becomes SyncBN with several CUDA processes
        multi = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--dynamo_backend", "no"]
        checks.append(train("ddp-syncbn-2gpu", multi, "bf16", 90))
    fsdp = ["--config_file", "accelerate_configs/fsdp2.yaml", "--num_processes", str(num_gpus)]
    checks.append(train(f"fsdp2-{num_gpus}gpu", fsdp, "bf16", 90))
    common = ["--device", "cuda", "--precision", "bf16", "--steps", "10", "--warmup", "3"]
    checks += [
        bench("bench-train-segformer-b0", ["train", SEGFORMER_B0, *common, "--batch", "8", "--compile"], 150),
        bench("bench-train-vit-b", ["train", VIT_B, *common, "--batch", "4", "--with-cp"], 90),
        bench("bench-infer-segformer-b0", ["infer", SEGFORMER_B0, "--speed", "--device", "cuda"], 60),
        bench("bench-infer-vit-b", ["infer", VIT_B, "--speed", "--device", "cuda"], 60),
    ]
    return checks


def summarize_run(work_dir: Path) -> str:
    """A training run's figures from its `scalars.jsonl`: steps, last loss, skipped steps, mIoU."""
    files = sorted(work_dir.rglob("scalars.jsonl"))
    if not files:
        return "no scalars.jsonl written"
    records = [json.loads(line) for line in files[-1].read_text(encoding="utf-8").splitlines() if line]
    train = [r for r in records if r.get("mode") == "train"]
    val = [r for r in records if r.get("mode") == "val"]
    parts = []
    if train:
        last = train[-1]
        parts.append(f"iter {last['iter']}")
        if last.get("loss") is not None:
            parts.append(f"loss {last['loss']:.4f}")
        # the counters are per log interval: the run's total is their sum
        skipped = {k: sum(r.get(k) or 0 for r in train) for k in ("overflow_skipped", "nonfinite_skipped")}
        parts.append(f"scaler skips {int(skipped['overflow_skipped'])}")
        if skipped["nonfinite_skipped"]:
            parts.append(f"non-finite skips {int(skipped['nonfinite_skipped'])}")
    if val and val[-1].get("mIoU") is not None:
        parts.append(f"val mIoU {val[-1]['mIoU']:.2f}")
    return ", ".join(parts) or "no training records"


def summarize_rows(rows: list[dict[str, Any]]) -> str:
    """A benchmark's rows in one cell: per model its images/s, peak memory and % of matmul peak."""
    parts = []
    for row in rows:
        figures = [
            f"{row[k]} {label}"
            for k, label in (("images/s", "img/s"), ("peak MiB", "MiB"), ("% matmul peak", "% peak"))
            if row.get(k) is not None
        ]
        name = row.get("model") or row.get("mode") or "?"
        parts.append(f"{name}: " + ", ".join(figures) if figures else str(name))
    return "; ".join(parts)


def run_check(check: Check, log: Path, timeout: float, env: dict[str, str]) -> Result:
    """Run one check in its own process (output to `log`), bounded by `timeout` seconds."""
    start = time.monotonic()
    with open(log, "w", encoding="utf-8") as f:
        try:
            code = subprocess.run(
                check.argv, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return Result(
                check, "timed out", time.monotonic() - start, f"over {timeout:.0f} s: see {log.name}"
            )
    seconds = time.monotonic() - start
    status = "ok" if code == 0 else f"failed ({code})"
    if check.rows is not None:
        rows = json.loads(check.rows.read_text(encoding="utf-8")) if check.rows.is_file() else []
        return Result(check, status, seconds, summarize_rows(rows), rows)
    summary = summarize_run(check.work_dir) if check.work_dir is not None else ""
    return Result(check, status, seconds, summary if code == 0 else f"{summary}; see {log.name}")


def report(results: list[Result], environment: str) -> str:
    """The Markdown the check writes: the environment, one row per check, each benchmark's own table."""
    lines = ["# GPU check", "", environment, ""]
    rows = [
        {"check": r.check.name, "status": r.status, "s": f"{r.seconds:.0f}", "figures": r.summary}
        for r in results
    ]
    lines.append(markdown_table(rows) if rows else "(no check ran)")
    for r in results:
        if r.rows:
            lines += ["", f"## {r.check.name}", "", markdown_table(r.rows)]
    return "\n".join(lines) + "\n"


def cuda_devices() -> tuple[int, str]:
    """The number of CUDA devices and a line naming them (torch, CUDA and driver versions)."""
    import torch

    if not torch.cuda.is_available():
        return 0, f"torch {torch.__version__}: no CUDA device"
    n = torch.cuda.device_count()
    names = sorted({torch.cuda.get_device_name(i) for i in range(n)})
    return n, f"{n} x {', '.join(names)}; torch {torch.__version__}, CUDA {torch.version.cuda}"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("work_dirs/gpu_check"), help="logs and gpu_check.md")
    parser.add_argument("--budget", type=float, default=BUDGET, help="seconds for all checks together")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    num_gpus, environment = cuda_devices()
    if num_gpus == 0:
        text = f"# GPU check\n\nNot run: {environment}.\n"
        write(out / "gpu_check.md", text)
        print(text, end="")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    deadline = time.monotonic() + args.budget
    results = []
    for check in plan(num_gpus, out):
        left = deadline - time.monotonic()
        if left < 20:
            results.append(Result(check, "skipped", 0.0, "the time budget was spent"))
            continue
        print(f"[gpu check] {check.name} (up to {min(check.timeout, left):.0f} s) ...", flush=True)
        result = run_check(check, out / f"{check.name}.log", min(check.timeout, left), env)
        print(
            f"[gpu check] {check.name}: {result.status} in {result.seconds:.0f} s. {result.summary}",
            flush=True,
        )
        results.append(result)
    text = report(results, environment)
    write(out / "gpu_check.md", text)
    print(text, end="")
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
