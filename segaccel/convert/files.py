"""Reading weights files that come from outside: safetensors, or pickles read by `restricted_load`.

`restricted_load` (safe_pickle.py) is as strict as `torch.load(weights_only=True)` about what it runs
(nothing from the file), but reads whole training checkpoints (MMSegmentation 1.x files with
mmengine's message hub, numpy scalars) by leaving inert placeholders where other objects were.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .safe_pickle import is_placeholder, placeholder_names, restricted_load


def read_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """A flat `name → tensor` dict from a `.safetensors` file or a torch pickle (`.bin`, `.pth`, `.pt`).

    Pickles are read by `restricted_load`: tensors, plain containers and values are rebuilt, nothing
    from the file is ever called, other objects become inert placeholders. A checkpoint dict holding
    the weights under `state_dict` (MMSegmentation, mmengine) or `key` is unwrapped (whatever else the
    checkpoint holds is ignored). Anything that is not a flat dict of tensors raises.
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
    obj = read_pickle(file)
    if isinstance(obj, dict):
        for wrapper in (key, "state_dict"):
            if wrapper is not None and isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if isinstance(obj, dict):
        pickled = {k: v for k, v in obj.items() if is_placeholder(v)}
        if pickled:
            name, value = next(iter(pickled.items()))
            kinds = ", ".join(sorted(placeholder_names(value)))
            raise ValueError(
                f"{file}: refused to unpickle it: {name!r} holds a pickled {kinds} object, not a tensor "
                "(weights from outside are read as by torch.load(weights_only=True): tensors and plain "
                "containers only, nothing in the file is run)"
            )
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()
    ):
        found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{file}: expected a flat state dict (name → tensor) or one under `state_dict`: {found}"
        )
    return obj


def read_pickle(file: str | os.PathLike) -> Any:
    """`restricted_load(file)` on the CPU, with errors that name the file."""
    try:
        return restricted_load(file)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(
            f"{file}: cannot read this pickle ({type(exc).__name__}: {reason}); an incomplete download or a "
            "corrupt file?"
        ) from exc


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
