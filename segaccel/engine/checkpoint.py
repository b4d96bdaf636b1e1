"""Atomic training checkpoints in `WORK_DIR/checkpoints/iter_<N>/`.

Every process writes its part of `accelerator.save_state` into a hidden temporary folder; once
all are done, the main process writes `segaccel_state.json` and renames the folder into place.
A folder named `iter_<N>` therefore always holds a complete checkpoint; a leftover `.tmp_*` folder
from an interrupted write is never loaded and is cleaned up by the next save.

The stages of a write are named so tests can stop a run at each one deterministically: set
`SEGACCEL_KILL_AT=<stage>` (and optionally `SEGACCEL_KILL_AT_ITER=<N>`) and the process kills
itself with SIGKILL on reaching it. Stages, in order:

- `before_save`: nothing of this checkpoint written yet;
- `files_written`: Accelerate's files (model, optimizer, scheduler, RNG states) are in the
  temporary folder, `segaccel_state.json` is not;
- `state_written`: the temporary folder is complete but not yet renamed;
- `renamed`: `iter_<N>` is in place, older checkpoints not yet pruned;
- `pruned`: done.

Exported model folders (`WORK_DIR/model`, `WORK_DIR/best_model`) are written the same way
(`write_folder_atomically`), with the stages `export_written` (the new folder is complete beside
the old one) and `export_swapped` (the old one moved aside, the new one not yet in place). Between
checkpoints, `after_step` (an optimizer step taken, its checkpoint not yet written) and
`validation` (in the middle of a validation pass) stop a run where no file is being written.

Besides `iter_<N>`, a checkpoint may be saved under another name (`best_mIoU`): `--resume` only
ever picks `iter_<N>` folders.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import Accelerator

STATE_FILE = "segaccel_state.json"
CHECKPOINT_STAGES = ("before_save", "files_written", "state_written", "renamed", "pruned")
EXPORT_STAGES = ("export_written", "export_swapped")
_ITER_DIR = re.compile(r"^iter_(\d+)$")


def checkpoint_stage(stage: str, iteration: int) -> None:
    """Kill this process with SIGKILL if `SEGACCEL_KILL_AT` names this stage (fault tests)."""
    if os.environ.get("SEGACCEL_KILL_AT") != stage:
        return
    at_iter = os.environ.get("SEGACCEL_KILL_AT_ITER")
    if at_iter is not None and int(at_iter) != iteration:
        return
    os.kill(os.getpid(), signal.SIGKILL)


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
    checkpoint_stage("before_save", iteration)
    if accelerator.is_main_process:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        for stale in ckpt_root.glob(".tmp_*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    checkpoint_stage("files_written", iteration)
    if accelerator.is_main_process:
        _write_json(tmp / STATE_FILE, {"iteration": iteration, **extra_state})
        checkpoint_stage("state_written", iteration)
        replace_folder(tmp, final)
        checkpoint_stage("renamed", iteration)
        if max_keep > 0:
            prune_checkpoints(ckpt_root, max_keep, keep=keep)
        checkpoint_stage("pruned", iteration)
    accelerator.wait_for_everyone()
    return final


def replace_folder(new: Path, final: Path, stage_iteration: int | None = None) -> None:
    """Put the complete folder `new` at `final`, replacing what is there, never leaving a mix.

    A folder cannot be replaced by a rename in one step, so the old one is first renamed aside
    (`.old_<name>`), the new one renamed into place, then the old one deleted: a kill at any
    moment leaves `final` complete (old or new) or, between the renames, absent with the old
    copy kept beside it. With `stage_iteration`, the `export_swapped` fault stage is passed.
    """
    new, final = Path(new), Path(final)
    old = final.parent / f".old_{final.name}"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    if stage_iteration is not None:
        checkpoint_stage("export_swapped", stage_iteration)
    os.replace(new, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def write_folder_atomically(final: Path, write: Callable[[Path], None], iteration: int = 0) -> None:
    """Call `write(tmp)` to fill a fresh `.tmp_<name>` folder beside `final`, then swap it into place.

    For exported models: a reader of `final` never sees a half-written folder. Leftovers of an
    interrupted write (`.tmp_<name>`, `.old_<name>`) are removed first; a `.old_<name>` whose
    `final` is missing (killed between the two renames) is put back.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp_{final.name}"
    old = final.parent / f".old_{final.name}"
    if old.exists() and not final.exists():
        os.replace(old, final)
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    tmp.mkdir()
    write(tmp)
    checkpoint_stage("export_written", iteration)
    replace_folder(tmp, final, stage_iteration=iteration)


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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
