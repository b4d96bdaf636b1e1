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

ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = ROOT / "scripts" / "train.py"

TINY_DATA = "{num_train: 24, num_val: 7, image_size: [32, 48], seed: 1}"
TINY_CONFIG = f"""
_base_: [{ROOT / "configs" / "quickstart.yaml"}]
model:
  backbone: {{embed_dims: 8, num_layers: [1, 1, 1, 1], num_heads: [1, 2, 5, 8], drop_path_rate: 0.1}}
  decode_head: {{in_channels: [8, 16, 40, 64], channels: 16, dropout_ratio: 0.1}}
train_dataloader:
  batch_size: 2
  dataset: {{synthetic: {TINY_DATA}}}
val_dataloader:
  batch_size: 2           # 7 validation images: not divisible by 2 processes x 2
  dataset: {{synthetic: {TINY_DATA}}}
test_dataloader:
  batch_size: 2
  dataset: {{synthetic: {TINY_DATA}}}
train_cfg: {{type: IterBasedTrainLoop, max_iters: 6, val_interval: 3}}
param_scheduler:
  - {{type: LinearLR, start_factor: 0.1, begin: 0, end: 2}}
  - {{type: PolyLR, power: 1.0, begin: 2, end: 6}}
default_hooks:
  logger: {{interval: 1}}
  checkpoint: {{interval: 3, max_keep_ckpts: 3, save_best: null}}
  visualization: {{num_samples: 1}}
"""


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
