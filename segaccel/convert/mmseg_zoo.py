"""An MMSegmentation model-zoo entry (a `.pth` and its config) → our config for the same model.

`zoo_config` pairs a checkpoint read by `load_mmseg_checkpoint` with a config: an MMSegmentation
`.py` config (converted by `convert_mmseg_config`, nothing executed), our YAML, or, when none is
given, the training config a 1.x checkpoint carries in `meta.cfg`. Class names and palette come from
the checkpoint; the backbone's ImageNet `pretrained` is dropped (the checkpoint holds every weight).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

from segaccel.config import apply_overrides, load_config, to_plain
from segaccel.registry import ConfigError

from .mmseg_config import convert_mmseg_config


def zoo_config(
    checkpoint: dict[str, Any], config: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Our config (with `model` ready to build) for an MMSegmentation checkpoint, and notes.

    `checkpoint` is what `load_mmseg_checkpoint` returns. With an MMSegmentation config whose dataset
    or schedule has no counterpart here, only the model is converted (a note says why).
    """
    notes: list[str] = []
    if config is None:
        text = checkpoint.get("config_text")
        if not text:
            raise ConfigError(
                "this checkpoint carries no config: pass --config (its MMSegmentation .py config or our YAML)"
            )
        if "train_dataloader" not in text and "data = dict(" in text:
            raise ConfigError(
                "this checkpoint carries an MMSegmentation 0.x config: pass --config with the 1.x config of "
                "the same model (MMSegmentation 1.x's configs/ list the 0.x-era checkpoints they load)"
            )
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "checkpoint_config.py"
            path.write_text(text, encoding="utf-8")
            cfg = _from_mmseg(path, notes)
        notes.insert(0, "config: the one saved in the checkpoint (meta.cfg)")
    elif str(config).endswith(".py"):
        cfg = _from_mmseg(Path(config), notes)
    else:
        cfg = load_config(config)
    cfg = apply_overrides(to_plain(cfg), overrides or [])
    model = copy.deepcopy(cfg["model"])
    if checkpoint.get("classes") and not model.get("id2label"):
        model["id2label"] = dict(enumerate(checkpoint["classes"]))
    if checkpoint.get("palette") and not model.get("palette"):
        model["palette"] = checkpoint["palette"]
    if not model.get("test_pipeline"):
        for key in ("test_dataloader", "val_dataloader"):
            pipeline = ((cfg.get(key) or {}).get("dataset") or {}).get("pipeline")
            if pipeline:
                model["test_pipeline"] = pipeline
                break
    backbone = model.get("backbone") or {}
    if backbone.get("pretrained"):  # the checkpoint holds every weight: no ImageNet download
        model["backbone"] = {**backbone, "pretrained": None}
    cfg["model"] = model
    return cfg, notes


def _from_mmseg(path: Path, notes: list[str]) -> dict[str, Any]:
    try:
        cfg, more = convert_mmseg_config(path)
    except ConfigError as exc:
        cfg, more = convert_mmseg_config(path, model_only=True)
        more.insert(0, f"model only: the rest of the config does not convert ({exc})")
    notes.extend(more)
    return cfg
