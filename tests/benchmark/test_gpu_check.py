"""`scripts/gpu_check.sh`: what it runs for 1 and 2 GPUs, how it reads results, and its exit without CUDA.

The check itself needs a CUDA device; here its plan is checked against the real command-line parsers,
its summaries against hand-written logs and rows, and one check process is run for real.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segaccel.benchmark import gpu_check
from segaccel.benchmark.table import markdown_table
from segaccel.cli import benchmark as benchmark_cli
from segaccel.cli import train as train_cli

ROOT = Path(__file__).resolve().parents[2]


def test_plan_for_one_and_two_gpus(tmp_path):
    one = [c.name for c in gpu_check.plan(1, tmp_path)]
    two = [c.name for c in gpu_check.plan(2, tmp_path)]
    assert one == [
        "train-bf16",
        "train-fp16",
        "fsdp2-1gpu",
        "bench-train-segformer-b0",
        "bench-train-vit-b",
        "bench-infer-segformer-b0",
        "bench-infer-vit-b",
    ]
    assert two == [*one[:2], "ddp-syncbn-2gpu", "fsdp2-2gpu", *one[3:]]
    # the checks together are bounded by the budget, under 8 minutes; each alone fits in it
    assert gpu_check.BUDGET < 8 * 60
    assert all(20 < c.timeout < gpu_check.BUDGET for c in gpu_check.plan(2, tmp_path))


def test_every_planned_command_parses(tmp_path):
    """The training runs' and benchmarks' arguments are accepted by the real parsers; files exist."""
    for check in gpu_check.plan(2, tmp_path):
        argv = check.argv
        if (
            check.work_dir is not None
        ):  # python -m accelerate.commands.launch [launch args] scripts/train.py ...
            script = argv.index("scripts/train.py")
            args = train_cli.parse_args(argv[script + 1 :])
            assert Path(args.work_dir) == check.work_dir and args.mixed_precision in ("bf16", "fp16")
            assert (ROOT / args.config).is_file()
            if "--config_file" in argv:
                assert (ROOT / argv[argv.index("--config_file") + 1]).is_file()
        else:  # python scripts/benchmark.py SUB CONFIG ... --json-file PATH
            assert argv[1] == "scripts/benchmark.py" and (ROOT / argv[3]).is_file()
            module = __import__(f"segaccel.benchmark.{argv[2]}", fromlist=["add_arguments"])
            parser = argparse.ArgumentParser()
            module.add_arguments(parser)
            parser.add_argument("--json-file")
            args = parser.parse_args(argv[3:])
            assert args.device == "cuda" and Path(args.json_file) == check.rows
    precisions = {
        c.name: c.argv[c.argv.index("--mixed_precision") + 1] for c in gpu_check.plan(1, tmp_path)[:2]
    }
    assert precisions == {"train-bf16": "bf16", "train-fp16": "fp16"}


def test_summarize_run_sums_the_skips_of_every_interval(tmp_path):
    log = tmp_path / "run" / "logs" / "scalars.jsonl"
    log.parent.mkdir(parents=True)
    records = [
        {"mode": "train", "iter": 20, "loss": 1.25, "overflow_skipped": 3, "nonfinite_skipped": 0},
        {"mode": "train", "iter": 40, "loss": 0.75, "overflow_skipped": 1, "nonfinite_skipped": 0},
        {"mode": "val", "iter": 40, "mIoU": 41.237, "aAcc": 80.0},
        {"mode": "train", "iter": 60, "loss": 0.5, "overflow_skipped": 0, "nonfinite_skipped": 2},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert gpu_check.summarize_run(tmp_path / "run") == (
        "iter 60, loss 0.5000, scaler skips 4, non-finite skips 2, val mIoU 41.24"
    )
    assert gpu_check.summarize_run(tmp_path / "empty") == "no scalars.jsonl written"


def test_a_check_process_gives_its_rows_and_a_hanging_one_is_stopped(tmp_path):
    rows = [{"model": "segaccel", "images/s": 12.5, "peak MiB": 900.0, "% matmul peak": 31.4}]
    write = f"import json; json.dump({rows!r}, open({str(tmp_path / 'r.json')!r}, 'w'))"
    check = gpu_check.Check("bench", [sys.executable, "-c", write], 60, rows=tmp_path / "r.json")
    result = gpu_check.run_check(check, tmp_path / "bench.log", 60, dict(os.environ))
    assert result.status == "ok" and result.rows == rows
    assert result.summary == "segaccel: 12.5 img/s, 900.0 MiB, 31.4 % peak"

    spin = gpu_check.Check("spin", [sys.executable, "-c", "while True: pass"], 1, work_dir=tmp_path / "w")
    stopped = gpu_check.run_check(spin, tmp_path / "spin.log", 1.0, dict(os.environ))
    assert stopped.status == "timed out" and 1.0 <= stopped.seconds < 30

    failing = gpu_check.Check(
        "fail", [sys.executable, "-c", "raise SystemExit(3)"], 60, work_dir=tmp_path / "f"
    )
    assert gpu_check.run_check(failing, tmp_path / "fail.log", 60, dict(os.environ)).status == "failed (3)"

    text = gpu_check.report([result, stopped], "1 x GPU")
    assert "| bench | ok |" in text and "| spin | timed out |" in text and "## bench" in text


def test_markdown_table_escapes_bars_and_leaves_none_empty():
    table = markdown_table([{"a": 1, "b": None}, {"a": "x|y", "b": 2.5}])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 |  |", "| x\\|y | 2.5 |"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the exit without a CUDA device")
def test_without_cuda_the_script_says_not_run_and_exits_0(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/gpu_check.sh"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Not run" in done.stdout and "no CUDA device" in done.stdout
    assert (tmp_path / "gpu_check.md").read_text() == done.stdout


def test_benchmark_json_option_writes_the_rows(tmp_path):
    out = tmp_path / "rows.json"
    config = "configs/segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.yaml"
    rows = benchmark_cli.main(
        [
            "train",
            config,
            "--device",
            "cpu",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--batch",
            "1",
            "--crop",
            "64",
            "96",
            "--num-classes",
            "3",
            "--no-flops",
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(rows, default=str))
    assert [r["model"] for r in rows] == ["segaccel"] and rows[0]["images/s"] > 0
