"""Payload pickles, a tiny trained run and a tiny model folder for the security tests.

A payload is a pickle whose `__reduce__` asks the unpickler to call `os.system("touch MARKER")`: if
anything ever unpickles it for real, the marker file appears. `assert_payload_is_live` proves, for
each form used, that an ordinary `pickle.loads`/`torch.load(weights_only=False)` does run it, so a
test that finds no marker shows the payload was refused, not that it was harmless.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from engine_helpers import TINY_CONFIG, TRAIN_SCRIPT  # tests/engine and tests/hub: on pytest's pythonpath
from hub_testing import TINY_SEGFORMER, tiny_segformer

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["ROOT", "TINY_CONFIG", "TINY_SEGFORMER", "TRAIN_SCRIPT", "tiny_segformer"]


class Payload:
    """Runs `touch MARKER` when unpickled by an ordinary unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def write_payload(path: Path, marker: Path, form: str = "torch") -> Path:
    """A payload at `path`: `torch` (torch.save's zip, the payload inside a state dict) or `pickle`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    if form == "torch":
        torch.save({"state": Payload(marker), "weight": torch.zeros(2)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    return path


def assert_payload_is_live(tmp_path: Path) -> None:
    """Control: both payload forms run their command when unpickled without restriction."""
    for form in ("torch", "pickle"):
        marker = tmp_path / f"control-{form}"
        path = write_payload(tmp_path / f"control.{form}", marker, form)
        if form == "torch":
            torch.load(path, weights_only=False)
        else:
            pickle.loads(path.read_bytes())
        assert marker.exists(), f"the {form} payload did not run when unpickled: the test would prove nothing"


def train(config: Path, work_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`scripts/train.py CONFIG --work-dir WORK_DIR ARGS` in a fresh process (one thread)."""
    return subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), str(config), "--work-dir", str(work_dir), *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def tiny_training_config(tmp_path, **top):
    """A training config of the tiny model on a tiny synthetic set (keys of `top` added)."""
    model = {"type": "Segmentor", **json.loads(json.dumps(TINY_SEGFORMER))}
    data = {
        "batch_size": 1,
        "num_workers": 0,
        "dataset": {
            "path": "segaccel/synthetic",
            "synthetic": {"num_train": 2, "num_val": 2, "image_size": [32, 48], "seed": 1},
            "split": "validation",
            "pipeline": [{"type": "PackSegInputs"}],
        },
    }
    cfg = {"model": model, "test_dataloader": data, "test_evaluator": {"type": "IoUMetric"}, **top}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
