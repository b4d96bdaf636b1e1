"""What `scripts/export.py MODEL` accepts: a model folder, a training work dir, a Hub id, or a config
(YAML) with a checkpoint. Returns the built `Segmentor` and where its training config lives."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from segaccel.config import load_config
from segaccel.models import Segmentor
from segaccel.models.weights import load_weights
from segaccel.registry import MODELS, ConfigError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CONFIG_SUFFIXES = (".yaml", ".yml", ".py")
EXTRA_FILES = ("config.yaml", "metrics.json")  # copied beside an export when the source has them


@dataclass
class ModelSource:
    """A loaded model and the folder its `config.yaml`/`metrics.json` come from (None if none)."""

    model: Segmentor
    description: str
    extra_dir: Path | None = None


def load_model(
    model: str | os.PathLike, checkpoint: str | None = None, revision: str | None = None
) -> ModelSource:
    """Build the model `model` names, with its weights, in eval mode.

    - a model folder (`config.json` + `model.safetensors`) or a training work dir (its `model/`);
    - a config file (`.yaml`/`.py`) with `checkpoint` weights (a file, folder or Hub id), else the
      config's `load_from`;
    - a Hub model id (`org/name`, `revision` for a branch, tag or commit).
    """
    source = str(model)
    path = Path(source)
    if path.is_dir():
        if checkpoint:
            raise ValueError(f"{source}: a model folder carries its weights; --checkpoint goes with a config")
        for folder in (path, path / "model"):
            if (folder / "config.json").is_file():
                built = Segmentor.from_pretrained(str(folder))
                return ModelSource(built.eval(), str(folder), folder)
        raise FileNotFoundError(f"{source}: neither a model folder (config.json) nor a work dir with model/")
    if path.is_file() and path.suffix in CONFIG_SUFFIXES:
        return _from_config(path, checkpoint)
    if path.is_file():
        kinds = ", ".join(CONFIG_SUFFIXES)
        raise ValueError(f"{source}: expected a config ({kinds}), a model folder or a Hub id")
    if not HUB_ID.match(source):
        raise FileNotFoundError(f"{source}: no such model folder or config file (nor a Hub id like org/name)")
    if checkpoint:
        raise ValueError(f"{source}: a Hub model carries its weights; --checkpoint goes with a config")
    built = Segmentor.from_pretrained(source, revision=revision)
    return ModelSource(built.eval(), source, _hub_extras(source, revision))


def _from_config(path: Path, checkpoint: str | None) -> ModelSource:
    from segaccel.engine.build import model_config  # the runner's completion of cfg.model (labels, pipeline)

    cfg = load_config(path)
    weights = checkpoint or cfg.get("load_from")
    if not weights:
        raise ConfigError(f"{path}: no weights to export: pass --checkpoint (or set load_from in the config)")
    model = MODELS.build(model_config(cfg), key="model")
    load_weights(model, weights, strict=True)
    return ModelSource(model.eval(), f"{path} + {weights}", None)


def _hub_extras(repo_id: str, revision: str | None) -> Path | None:
    """The folder of the Hub repo's cached `config.yaml` (and `metrics.json`), when it has them."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    folder = None
    for name in EXTRA_FILES:
        try:
            folder = Path(hf_hub_download(repo_id, name, revision=revision)).parent
        except (EntryNotFoundError, LocalEntryNotFoundError):
            continue
    return folder


def load_any_model(
    model: str | os.PathLike,
    checkpoint: str | None = None,
    revision: str | None = None,
    **runtime_kwargs: object,
) -> tuple[torch.nn.Module, str]:
    """An exported folder as an `ExportedSegmentor` (onnxruntime / torch.export), anything else
    `load_model` takes as the PyTorch `Segmentor`; with a short description of what was loaded."""
    from segaccel.deploy import ExportedSegmentor, is_exported_folder

    if is_exported_folder(model):
        exported = ExportedSegmentor(model, **runtime_kwargs)
        cfg = exported.export_config
        return exported, f"{model} ({cfg.format}, {cfg.dtype}, run by {exported.backend.name})"
    source = load_model(model, checkpoint=checkpoint, revision=revision)
    return source.model, f"{source.description} (PyTorch)"
