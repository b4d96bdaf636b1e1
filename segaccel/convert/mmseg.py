"""MMSegmentation model-zoo checkpoints → segaccel state dicts.

Our module names follow MMSegmentation's (`backbone.layers.{i}.1.{j}.attn.attn.in_proj_weight`,
`decode_head.convs.{i}.conv` / `.bn`, `decode_head.conv_seg`, ...), so the map is short: a
`module.` prefix (DistributedDataParallel) is dropped, and so are `data_preprocessor.*` entries
(its mean/std are configuration, in our `config.json`). The checkpoint is read with
`torch.load(weights_only=True)`; one whose pickle holds other objects (mmengine's message hub, numpy
arrays) is refused with a message saying how to re-save it.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .files import load_pickle_weights_only

_DROPPED_PREFIXES = ("data_preprocessor.",)


def load_mmseg_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read an MMSegmentation `.pth`: `{"state_dict": converted weights, "classes": [...] | None,
    "palette": [[r, g, b], ...] | None}` (class names and palette from the checkpoint's `meta`,
    MMSegmentation 0.x `CLASSES`/`PALETTE` or 1.x `dataset_meta`)."""
    ckpt = load_pickle_weights_only(path)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(ckpt).__name__}")
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path}: no `state_dict` of tensors in this checkpoint (keys: {sorted(ckpt)[:8]})")
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    dataset_meta = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), dict) else {}
    classes = dataset_meta.get("classes", meta.get("CLASSES"))
    palette = dataset_meta.get("palette", meta.get("PALETTE"))
    return {
        "state_dict": convert_mmseg_state_dict(state),
        "classes": [str(c) for c in classes] if classes else None,
        "palette": [[int(c) for c in colour] for colour in palette] if palette else None,
    }


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
