"""`--resume` continues the run as it was started: the config comes from the checkpoint.

A checkpoint's `segaccel_state.json` holds the run's resolved config (after `_base_`, `--dataset`
and every override). Resuming restores it, so the command printed when a run stops — the config,
the work dir and `--resume`, without the original overrides — reaches the same final iteration
with the same schedule. Overrides given on the resuming command line are applied on top of it (to
train longer: `train_cfg.max_iters=N`), and the checkpoint's restore names every key they change.
A config file that now differs from the run's is reported, not used.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from segaccel.config import apply_overrides, load_config
from segaccel.engine.checkpoint import config_changes, read_checkpoint_state, resume_path
from segaccel.engine.logging import logger


def resumed_config(
    cfg: dict[str, Any], work_dir: str | os.PathLike, resume: bool | str, overrides: list[str]
) -> dict[str, Any]:
    """The config to resume with: the run's own (from the checkpoint `resume` names, else
    `WORK_DIR/config.yaml`) with this command's `overrides` on top; `cfg` when neither exists."""
    work_dir = Path(work_dir)
    checkpoint = resume_path(resume, work_dir / "checkpoints")
    saved = read_checkpoint_state(checkpoint).get("config") if checkpoint is not None else None
    source = f"the checkpoint {checkpoint}"
    if saved is None and (work_dir / "config.yaml").is_file():
        saved, source = load_config(work_dir / "config.yaml"), str(work_dir / "config.yaml")
    if saved is None:
        return cfg
    restored = apply_overrides(saved, overrides)
    restored["work_dir"] = cfg.get("work_dir", restored.get("work_dir"))
    differences = [c for c in config_changes(restored, cfg) if not c.startswith("work_dir")]
    message = f"resuming with the run's own config, from {source}"
    if overrides:
        message += f", with {' '.join(overrides)} applied on top"
    if differences:
        shown = differences[:10] + (
            [f"... and {len(differences) - 10} more"] if len(differences) > 10 else []
        )
        message += (
            "; the config given on this command line differs and is not used (pass key=value overrides to "
            "change the run):\n  " + "\n  ".join(shown)
        )
    logger.info(message)
    return restored


def command_prefix(module: str = "segaccel.cli.train") -> str:
    """How this command was started, to print back: `python scripts/train.py`, `segaccel train`,
    `segaccel-train` or `python -m segaccel.cli.train`; under several processes, `accelerate launch`."""
    argv0 = sys.argv[0] if sys.argv else ""
    name = Path(argv0).name
    if name.startswith("segaccel "):  # `segaccel train` (segaccel.cli.main names the command)
        prog = name
    elif name == "segaccel":
        prog = f"segaccel {module.rsplit('.', 1)[-1].replace('_', '-')}"
    elif name.startswith("segaccel-"):
        prog = name
    elif argv0.endswith(".py") and Path(argv0).parent.name == "scripts":
        path = Path(argv0).resolve()
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            pass
        prog = f"python {shlex.quote(str(path))}"
    else:
        prog = f"python -m {module}"
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if processes > 1:
        launch = f"accelerate launch --num_processes {processes}"
        return f"{launch} {prog[len('python ') :]}" if prog.startswith("python ") else f"{launch} -m {module}"
    return prog


def resume_command(config: str | os.PathLike | None, work_dir: str | os.PathLike) -> str:
    """The command that resumes a run (its config comes back from the checkpoint)."""
    config, work_dir = shlex.quote(str(config or "CONFIG")), shlex.quote(str(work_dir))
    return f"{command_prefix()} {config} --work-dir {work_dir} --resume"
