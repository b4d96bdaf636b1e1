"""Helpers shared by the engine tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


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
