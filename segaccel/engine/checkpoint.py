"""Atomic training checkpoints in `WORK_DIR/checkpoints/iter_<N>/`.

Every process writes its part of `accelerator.save_state` into a hidden temporary folder; once
all are done, the main process writes `segaccel_state.json` and renames the folder into place.
A folder named `iter_<N>` therefore always holds a complete checkpoint; a leftover `.tmp_*` folder
from an interrupted write is never loaded and is cleaned up by the next save.

The stages of a write are kill points of the interruption tests (`CHECKPOINT_STAGES` in
`segaccel.engine.fault_injection`): `before_save`, `files_written` (Accelerate's files written,
`segaccel_state.json` not), `state_written` (complete, not renamed), `renamed`, `pruned`. Exported
model folders are written the same way (`segaccel.engine.atomic`, `segaccel.engine.export`).

Besides `iter_<N>`, a checkpoint may be saved under another name (`best_mIoU`): `--resume` only
ever picks `iter_<N>` folders. Resuming (`resume_path`, `restore_checkpoint`) says which config
keys changed since the checkpoint was written.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from segaccel.config import to_plain
from segaccel.engine.atomic import replace_folder, write_json_atomically
from segaccel.engine.fault_injection import kill_point
from segaccel.engine.logging import flat_config, logger

STATE_FILE = "segaccel_state.json"
_ITER_DIR = re.compile(r"^iter_(\d+)$")


def save_checkpoint(
    accelerator: Accelerator,
    ckpt_root: Path,
    iteration: int,
    extra_state: dict[str, Any],
    max_keep: int = -1,
    keep: tuple[str, ...] = (),
    name: str | None = None,
) -> Path:
    """Write `ckpt_root/iter_<iteration>` (or `ckpt_root/<name>`) atomically on all processes.

    Every process must call it (Accelerate's `save_state` is collective). `extra_state`
    (JSON-able: best metric, config, ...) is written by the main process with the iteration as
    `segaccel_state.json`, last, so a folder without it is incomplete. With `max_keep > 0` only
    the newest `max_keep` `iter_*` folders are kept (and any folder named in `keep`). Returns the
    final path.
    """
    ckpt_root = Path(ckpt_root)
    name = name or f"iter_{iteration}"
    final = ckpt_root / name
    tmp = ckpt_root / f".tmp_{name}"
    kill_point("before_save", iteration)
    if accelerator.is_main_process:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        for stale in ckpt_root.glob(".tmp_*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    kill_point("files_written", iteration)
    if accelerator.is_main_process:
        write_json_atomically(tmp / STATE_FILE, {"iteration": iteration, **extra_state})
        kill_point("state_written", iteration)
        replace_folder(tmp, final)
        kill_point("renamed", iteration)
        if max_keep > 0:
            prune_checkpoints(ckpt_root, max_keep, keep=keep)
        kill_point("pruned", iteration)
    accelerator.wait_for_everyone()
    return final


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints (`iter_<N>` with a state file), oldest first."""
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return []
    found = []
    for p in ckpt_root.iterdir():
        m = _ITER_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The complete `iter_<N>` checkpoint with the largest N; half-written folders never count."""
    found = list_checkpoints(ckpt_root)
    return found[-1] if found else None


def read_checkpoint_state(path: Path) -> dict[str, Any]:
    """The `segaccel_state.json` of a checkpoint folder; a clear error if it is not one."""
    state_file = Path(path) / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(
            f"{path} is not a complete segaccel checkpoint (no {STATE_FILE}); "
            "an interrupted write leaves no such folder, so this may be the wrong path"
        )
    with open(state_file, encoding="utf-8") as f:
        return json.load(f)


def prune_checkpoints(ckpt_root: Path, max_keep: int, keep: tuple[str, ...] = ()) -> None:
    """Delete all but the newest `max_keep` checkpoints, sparing names in `keep`."""
    found = list_checkpoints(ckpt_root)
    for p in found[: max(len(found) - max_keep, 0)]:
        if p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)


def resume_path(resume: bool | str | None, ckpt_root: Path) -> Path | None:
    """The checkpoint `resume` names: the latest complete one for `True`/`"auto"`, else the path."""
    if not resume:
        return None
    if resume is True or resume == "auto":
        path = latest_checkpoint(ckpt_root)
        if path is None:
            logger.warning(f"--resume: no complete checkpoint in {ckpt_root}; starting from iteration 0")
        return path
    path = Path(resume)
    read_checkpoint_state(path)  # a clear error for a folder that is not a complete checkpoint
    return path


def restore_checkpoint(accelerator: Accelerator, path: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Restore everything `save_state` wrote (all processes); returns the checkpoint's state.

    Warns with the config keys that differ from the checkpoint's config (`cfg` is the new one).
    """
    state = read_checkpoint_state(path)
    accelerator.wait_for_everyone()
    accelerator.load_state(str(path))
    changes = config_changes(state.get("config"), cfg)
    if state.get("num_processes") not in (None, accelerator.num_processes):
        changes.append(
            f"processes: {state['num_processes']} -> {accelerator.num_processes} (the data stream "
            "continues in global batches of the new size; not an exact continuation)"
        )
    if changes:
        shown = changes[:20] + ([f"... and {len(changes) - 20} more"] if len(changes) > 20 else [])
        logger.warning(
            "resuming with a config that differs from the checkpoint's (the new values apply from "
            f"iteration {state['iteration']} on):\n  " + "\n  ".join(shown)
        )
    elif "config" not in state and state.get("config_digest") not in (None, config_digest(cfg)):
        logger.warning("resuming with a config that differs from the checkpoint's config")
    logger.info(f"resumed from {path} at iteration {state['iteration']}")
    return state


def config_digest(cfg: dict[str, Any]) -> str:
    """A short hash of the parts of a config that change what training computes."""
    keep = {
        k: cfg.get(k)
        for k in ("model", "train_dataloader", "optim_wrapper", "param_scheduler", "train_cfg", "seed")
    }
    return hashlib.sha256(json.dumps(to_plain(keep), sort_keys=True, default=str).encode()).hexdigest()[:16]


_NOT_COMPARED_ON_RESUME = ("work_dir", "resume")


def config_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """`key: old -> new` lines for every dotted key whose value differs (work_dir, resume ignored)."""
    if old is None:
        return []
    a = flat_config(to_plain(old), keep_lists=True)
    b = flat_config(to_plain(new), keep_lists=True)
    changes = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in _NOT_COMPARED_ON_RESUME:
            continue
        if key not in a:
            changes.append(f"{key}: (absent) -> {b[key]!r}")
        elif key not in b:
            changes.append(f"{key}: {a[key]!r} -> (absent)")
        elif a[key] != b[key]:
            changes.append(f"{key}: {a[key]!r} -> {b[key]!r}")
    return changes
