"""Push a saved segaccel model folder (or a training work dir) to the Hugging Face Hub."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from segaccel.model_card import METRICS_FILE, TRAIN_CONFIG_FILE
from segaccel.models.segmentor import Segmentor

logger = logging.getLogger(__name__)

EXTRA_FILES = (TRAIN_CONFIG_FILE, METRICS_FILE)  # copied beside config.json / model.safetensors


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """A model folder (`config.json` inside), or a training work dir's final `model/` folder."""
    folder = Path(path)
    for candidate in (folder, folder / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"{folder}: neither a saved model (config.json + model.safetensors) nor a work dir with model/"
    )


def push_model_dir(
    path: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    train_command: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload a model folder as a segaccel Hub repo in one commit; returns the commit URL.

    The model is loaded first (strictly: a broken folder is never pushed), saved again as
    `config.json` + `model.safetensors` with a fresh model card (results from `metrics.json`,
    training config from `config.yaml`, usage with `repo_id`), and uploaded with those two files.
    The repo is created if needed (`private`); `revision` names a branch, created from main if
    it does not exist.
    """
    model_dir = resolve_model_dir(path)
    model = Segmentor.from_pretrained(str(model_dir))
    api = HfApi(endpoint=endpoint, token=token)
    repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
    if revision not in (None, "main"):
        api.create_branch(repo_id=repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        for name in EXTRA_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, staging / name)
        card_kwargs: dict[str, Any] = {"repo_id": repo_id, "train_command": train_command}
        model.save_pretrained(staging, model_card_kwargs=card_kwargs)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=staging,
            revision=revision,
            commit_message=commit_message or f"Upload segaccel model from {model_dir}",
        )
    logger.info("pushed %s to %s (%s)", model_dir, repo_id, getattr(info, "commit_url", info))
    return str(getattr(info, "commit_url", info))
