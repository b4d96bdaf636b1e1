"""MMSegmentation model-zoo checkpoints → segaccel state dicts, read without mmengine or mmcv.

Our module names follow MMSegmentation's (its `ResNetV1c`, `SwinTransformer`, mmpretrain's
`ConvNeXt`, MiT and every head are native here with its key names), so the map is short: a `module.`
prefix (DistributedDataParallel) is dropped, and so are `data_preprocessor.*` entries (its mean/std
are configuration, in our `config.json`).

Files are read by `restricted_load` (safe_pickle.py): real 1.x files as mmengine's Runner writes them
(with its message hub of `HistoryBuffer`s and numpy scalars, optimizer and scheduler states) and 0.x
files alike, without importing anything they name and without running anything from them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .files import read_pickle
from .safe_pickle import is_placeholder

_DROPPED_PREFIXES = ("data_preprocessor.",)


def load_mmseg_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read an MMSegmentation `.pth` (1.x or 0.x) or `.safetensors` file.

    Returns `{"state_dict": weights in our names, "classes": [...] | None, "palette": [[r, g, b], ...]
    | None, "config_text": str | None, "meta": dict}`. Class names and palette come from
    `meta.dataset_meta` (1.x) or `meta.CLASSES`/`meta.PALETTE` (0.x); `config_text` is the training
    config the checkpoint carries (`meta.cfg` in 1.x files, `meta.config` in 0.x ones).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint file at {file}")
    if file.suffix == ".safetensors":
        from .files import read_state_dict

        ckpt: Any = {"state_dict": read_state_dict(file)}
    else:
        ckpt = read_pickle(file)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{file}: expected a checkpoint dict, got {type(ckpt).__name__}")
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        found = sorted(str(k) for k in ckpt)[:8]
        raise ValueError(f"{file}: no `state_dict` of tensors in this checkpoint (top-level keys: {found})")
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    dataset_meta = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), dict) else {}
    classes = dataset_meta.get("classes", meta.get("CLASSES"))
    palette = dataset_meta.get("palette", meta.get("PALETTE"))
    config_text = meta.get("cfg", meta.get("config"))
    return {
        "state_dict": convert_mmseg_state_dict(state),
        "classes": _classes(classes, file),
        "palette": _palette(palette, file),
        "config_text": config_text if isinstance(config_text, str) and config_text.strip() else None,
        "meta": meta,
    }


def _classes(classes: Any, file: Path) -> list[str] | None:
    if classes is None or is_placeholder(classes):
        return None
    if isinstance(classes, str) or not isinstance(classes, (list, tuple)):
        raise ValueError(f"{file}: meta classes must be a list of names, got {type(classes).__name__}")
    return [str(c) for c in classes] or None


def _palette(palette: Any, file: Path) -> list[list[int]] | None:
    if palette is None or is_placeholder(palette):
        return None
    try:
        out = [[int(c) for c in colour] for colour in palette]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{file}: meta palette must be a list of [r, g, b], got {palette!r:.80}") from exc
    return out or None


def convert_mmseg_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSegmentation's state dict → ours: drop a `module.` prefix and `data_preprocessor.*` entries."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if key.startswith(_DROPPED_PREFIXES):
            continue
        out[key] = value
    return out
