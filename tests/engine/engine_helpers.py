"""Helpers shared by the engine tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import torch

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


def reset_accelerate() -> None:
    """Reset Accelerate's process-wide state, so that the next `Accelerator` (a new `Runner`) starts clean.

    The `fresh_accelerate` fixture (tests/conftest.py) calls it before and after a test."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    PartialState._reset_state()


def read_scalars(work_dir: Path, mode: str = "train") -> list[dict]:
    lines = (Path(work_dir) / "logs" / "scalars.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["mode"] == mode]


def load_model_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_process_launch() -> list[str]:
    """`accelerate launch` of two gloo processes on this machine (append the script and its arguments)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*launch, "--main_process_port", str(free_port())]
