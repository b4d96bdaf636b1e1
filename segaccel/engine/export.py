"""Exported model folders (`WORK_DIR/model`, `WORK_DIR/best_model`) and pushing them to the Hub.

An exported folder is what `Segmentor.from_pretrained` reads: `save_pretrained`'s `config.json`,
`model.safetensors` and model card, plus the resolved training `config.yaml` and `metrics.json`
(the last validation's summary and per-class figures). It is written beside its place, then each file
is renamed over its old version (`segaccel.engine.atomic.write_files_atomically`): a run killed while
exporting never leaves a half-written file, and only the files segaccel writes (`EXPORT_FILES`) are
ever replaced or removed; anything else a user keeps in the folder (notes, sub-folders, a README
written by hand) stays as it is. `check_export_destination` refuses, before training starts, a
destination that is not a folder or holds a folder where segaccel writes a file.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segaccel.config import dump_config
from segaccel.engine.atomic import clean_temporaries, write_files_atomically
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
        card = {"model_name": folder_model_name(out_dir), "train_command": command_line()}
        model.save_pretrained(folder, model_card_kwargs=card)

    write_files_atomically(out_dir, write, iteration, owned=EXPORT_FILES, keep=_hand_written)
    logger.info(f"exported model to {out_dir}")
    return out_dir


EXPORT_FILES = ("config.json", "model.safetensors", "README.md", "config.yaml", METRICS_JSON)
"""The files an export writes (and may replace or remove) in its folder; nothing else there is touched."""


def _hand_written(path: Path) -> bool:
    """A README.md that segaccel did not generate: kept over the generated card."""
    if path.name != "README.md":
        return False
    try:
        return not is_generated_card(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return True


def check_output_destinations(work_dir: str | os.PathLike, best_model: bool = False) -> None:
    """Before training: the work dir, `checkpoints/`, `model/` (and `best_model/`) can be written.

    Each must be a folder or absent (and an export folder must not hold a folder where an export
    writes a file), so a run fails in seconds, not at its end. The temporary folders an interrupted
    export left in the work dir (segaccel's own, `engine.atomic`) are removed.
    """
    work_dir = Path(work_dir)
    for folder in (work_dir, work_dir / "checkpoints"):
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} exists and is not a folder: move it away (nothing was run)")
    check_export_destination(work_dir / "model")
    if best_model:
        check_export_destination(work_dir / "best_model")
    clean_temporaries(work_dir)


def check_export_destination(out_dir: str | os.PathLike) -> None:
    """Refuse now, not after training, a destination an export could not write.

    `out_dir` must be a folder or absent, and must not hold a folder (or anything but a file) where
    an export writes one of `EXPORT_FILES`. Raises NotADirectoryError / IsADirectoryError naming it.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(
            f"{out_dir} exists and is not a folder; the trained model is exported there: move it away "
            "(nothing was trained)"
        )
    for name in EXPORT_FILES:
        target = out_dir / name
        if target.exists() and not target.is_file():
            raise IsADirectoryError(
                f"{target} is not a file; the export writes its {name} there: move it away (nothing was "
                "trained)"
            )


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
