"""Exported model folders (`WORK_DIR/model`, `WORK_DIR/best_model`) and pushing them to the Hub.

An exported folder is what `Segmentor.from_pretrained` reads: `save_pretrained`'s `config.json`,
`model.safetensors` and model card, plus the resolved training `config.yaml` and `metrics.json`
(the last validation's summary and per-class figures). It is written beside its place and swapped
in (`segaccel.engine.atomic.write_folder_atomically`), so a run killed while exporting never leaves
a half-written model.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segaccel.config import dump_config
from segaccel.engine.atomic import write_folder_atomically
from segaccel.engine.logging import logger
from segaccel.engine.test_outputs import METRICS_JSON, write_metrics_json
from segaccel.model_card import folder_model_name, is_generated_card


def export_model_folder(
    out_dir: str | os.PathLike,
    model: Any,
    cfg: dict[str, Any],
    metrics: Mapping[str, Any] | None = None,
    per_class: Mapping[str, Any] | None = None,
    iteration: int = 0,
) -> Path:
    """Write `out_dir` atomically from `model` (a `Segmentor`), the resolved `cfg` and `metrics`.

    `metrics.json` (written when there are metrics) holds `metrics` and `per_class`; the model card
    shows both and the training command. A `README.md` written by hand in `out_dir` is kept.
    `iteration` names the export in the fault-test kill points. Call it on one process.
    """
    out_dir = Path(out_dir)

    def write(folder: Path) -> None:
        dump_config(cfg, folder / "config.yaml")
        if metrics:
            write_metrics_json(folder / METRICS_JSON, metrics, per_class or None)
        readme = out_dir / "README.md"
        if readme.is_file() and not is_generated_card(readme.read_text(encoding="utf-8")):
            shutil.copy2(readme, folder / "README.md")
        card = {"model_name": folder_model_name(out_dir), "train_command": command_line()}
        model.save_pretrained(folder, model_card_kwargs=card)

    write_folder_atomically(out_dir, write, iteration)
    logger.info(f"exported model to {out_dir}")
    return out_dir


def push_model_folder(model_dir: Path, cfg: dict[str, Any], work_dir: Path, iterations: int) -> str:
    """Push an exported folder as the config says (`hub_model_id`, default the work dir's name;
    `hub_private`), with the card `export_model_folder` wrote; returns the commit URL."""
    from segaccel.hub import push_model_dir

    repo_id = cfg.get("hub_model_id") or work_dir.name
    url = push_model_dir(
        model_dir,
        repo_id,
        private=True if cfg.get("hub_private") else None,
        commit_message=f"segaccel: {work_dir.name}, {iterations} iterations",
        train_command=command_line(),
    )
    logger.info(f"pushed the final model to {repo_id}: {url}")
    return url


def command_line() -> str | None:
    """The command that runs this process (`python scripts/train.py ...`), when it is a script."""
    if not sys.argv or not sys.argv[0].endswith(".py"):
        return None
    script = os.path.relpath(sys.argv[0]) if os.path.isabs(sys.argv[0]) else sys.argv[0]
    return " ".join(["python", shlex.quote(script), *(shlex.quote(a) for a in sys.argv[1:])])
