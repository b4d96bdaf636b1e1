"""Engine test helpers: a tiny SegFormer config on a tiny synthetic set, and `scripts/train.py` runs.

The tiny model (MiT embed_dims=8, one layer per stage) on 32x48 images trains an iteration in a few
milliseconds on a CPU, so the engine's behaviour (loops, state, signals, processes) is what a test
pays for. Dropout and drop_path are active, so exact-resume tests exercise the RNG states.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import ROOT, TINY_CONFIG, TRAIN_SCRIPT


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    """A config file for the tiny model and data (override keys on top with `load_config`)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


@pytest.fixture
def train_script():
    """Run `scripts/train.py ARGS` in a fresh Python process (env: the test's env plus `env`)."""

    def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 240):
        return subprocess.run(
            [sys.executable, str(TRAIN_SCRIPT), *map(str, args)],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
