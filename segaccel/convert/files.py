"""Reading weights files that come from outside: safetensors, or pickles loaded with `weights_only=True`."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch


def read_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """A flat `name → tensor` dict from a `.safetensors` file or a torch pickle (`.bin`, `.pth`, `.pt`).

    Pickles are loaded with `torch.load(weights_only=True)`: plain containers and tensors only, never
    arbitrary objects. A checkpoint dict holding the weights under `state_dict` (MMSegmentation,
    mmengine) or `key` is unwrapped. Anything that is not a flat dict of tensors raises.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no weights file at {file}")
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(file), device="cpu")
        except SafetensorError as exc:
            raise ValueError(
                f"{file}: not a valid safetensors file ({exc}); an incomplete download or a corrupt file?"
            ) from exc
    obj = load_pickle_weights_only(file)
    if isinstance(obj, dict):
        for wrapper in (key, "state_dict"):
            if wrapper is not None and isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()
    ):
        found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{file}: expected a flat state dict (name → tensor) or one under `state_dict`: {found}"
        )
    return obj


def load_pickle_weights_only(file: str | os.PathLike) -> Any:
    """`torch.load(file, weights_only=True)` on the CPU, with an error that says what was refused."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{file}: refused to unpickle it: it holds objects other than tensors and plain containers, "
            "and weights from outside are only loaded with torch.load(weights_only=True). Re-save just "
            "the state dict (torch.save(ckpt['state_dict'], path)) in a trusted environment, or convert "
            f"it to safetensors. ({str(exc).splitlines()[0]})"
        ) from exc
