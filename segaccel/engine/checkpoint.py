"""Atomic training checkpoints in `WORK_DIR/checkpoints/iter_<N>/`, and resuming from them.

Every process writes its part of `accelerator.save_state` into a temporary folder
(`.segaccel-tmp-iter_<N>`, marked as segaccel's: `engine.atomic`); the main process then writes the
registered states (`segaccel_custom_<i>.pkl`: the LR schedule, the stream position) and, last,
`segaccel_state.json`, and renames the folder into place. A folder named `iter_<N>` therefore always
holds a complete checkpoint; a leftover temporary folder of an interrupted write is never loaded and
is cleaned up by the next save (only segaccel's own: a user's `.tmp_x` is left alone). A write that
fails (a full disk) is a `CheckpointError` saying so; the previous checkpoints stay intact.

The stages of a write are kill points of the interruption tests (`CHECKPOINT_STAGES` in
`segaccel.engine.fault_injection`): `before_save`, `files_written` (Accelerate's files written,
`segaccel_state.json` not), `state_written` (complete, not renamed), `renamed`, `pruned`. Exported
model folders are written the same way (`segaccel.engine.atomic`, `segaccel.engine.export`).

Besides `iter_<N>`, a checkpoint may be saved under another name (`best_mIoU`): `--resume` only
ever picks `iter_<N>` folders. Resuming (`resume_path`, `restore_checkpoint`) reads nothing it has
not checked (`engine.checkpoint_files`: no pickle is unpickled beyond tensors and plain
containers), fails with a clear error when a state it needs is missing or refused, and says which
config keys changed since the checkpoint was written.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from segaccel.config import to_plain
from segaccel.engine.atomic import clean_temporaries, replace_folder, temp_folder, write_json_atomically
from segaccel.engine.checkpoint_files import (
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    check_checkpoint_files,
    check_model_file,
    custom_file,
    read_state_file,
    restore_custom_states,
    restore_rng_states,
    rng_file,
)
from segaccel.engine.fault_injection import kill_point
from segaccel.engine.logging import flat_config, logger

__all__ = ["STATE_FILE", "CheckpointError", "restore_checkpoint", "resume_path", "save_checkpoint"]
_ITER_DIR = re.compile(r"^iter_(\d+)$")


def save_checkpoint(
    accelerator: Accelerator,
    ckpt_root: Path,
    iteration: int,
    extra_state: dict[str, Any],
    max_keep: int = -1,
    keep: tuple[str, ...] = (),
    name: str | None = None,
    custom_objects: Sequence[Any] = (),
) -> Path:
    """Write `ckpt_root/iter_<iteration>` (or `ckpt_root/<name>`) atomically on all processes.

    Every process must call it (Accelerate's `save_state` and the `state_dict()` of a registered
    stream position are collective). `custom_objects` (objects with `state_dict`/`load_state_dict`)
    are saved as `segaccel_custom_<i>.pkl` by the main process. `extra_state` (JSON-able: best
    metric, config, ...) is written by the main process with the iteration as `segaccel_state.json`,
    last, so a folder without it is incomplete. With `max_keep > 0` only the newest `max_keep`
    `iter_*` folders are kept (and any folder named in `keep`). Returns the final path.
    """
    ckpt_root = Path(ckpt_root)
    name = name or f"iter_{iteration}"
    final = ckpt_root / name
    kill_point("before_save", iteration)
    tmp = ckpt_root / f".segaccel-tmp-{name}"
    if accelerator.is_main_process:
        if ckpt_root.exists() and not ckpt_root.is_dir():
            raise NotADirectoryError(f"{ckpt_root} exists and is not a folder; checkpoints are saved there")
        ckpt_root.mkdir(parents=True, exist_ok=True)
        clean_temporaries(ckpt_root)
        if final.exists() and not (final / STATE_FILE).is_file():
            raise FileExistsError(
                f"{final} exists and is not a segaccel checkpoint (no {STATE_FILE}); move it away, the "
                f"checkpoint of iteration {iteration} is saved under that name"
            )
        tmp = temp_folder(final)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        states = [obj.state_dict() for obj in custom_objects]  # collective for a stream position
        if accelerator.is_main_process:
            for i, state in enumerate(states):
                torch.save(state, tmp / custom_file(i))
        accelerator.wait_for_everyone()
        kill_point("files_written", iteration)
        if accelerator.is_main_process:
            write_json_atomically(tmp / STATE_FILE, {"iteration": iteration, **extra_state})
    except (OSError, RuntimeError) as exc:  # a full disk: torch says "unexpected pos", the OS ENOSPC
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        kept = latest_checkpoint(ckpt_root)
        raise CheckpointError(
            f"could not write the checkpoint {final} ({type(exc).__name__}: {exc}); is the disk full? "
            "Nothing of it was kept" + (f"; the last complete checkpoint, {kept}, is intact" if kept else "")
        ) from exc
    if accelerator.is_main_process:
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
    """The `segaccel_state.json` of a checkpoint folder, checked; a clear error if it is not one."""
    return read_state_file(Path(path))


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


def restore_checkpoint(
    accelerator: Accelerator,
    path: Path,
    cfg: dict[str, Any],
    custom_objects: Sequence[Any] = (),
    model: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Restore everything a checkpoint holds (all processes call it); returns its state.

    Every file is checked first (`engine.checkpoint_files.check_checkpoint_files`: each pickle read
    by the restricted reader and refused if it holds more than tensors and plain containers; the
    files this process needs present; `model.safetensors` valid, finite and of `model`'s dtypes).
    Accelerate then restores the model, optimizer and grad scaler; the RNG states and
    `custom_objects` are restored from the checked reads. Warns with the config keys that differ from
    the checkpoint's config (`cfg` is the new one).
    """
    path = Path(path)
    state = read_checkpoint_state(path)
    read = check_checkpoint_files(
        path, accelerator.process_index, len(custom_objects), needs_scaler=accelerator.scaler is not None
    )
    if model is not None and (path / MODEL_FILE).is_file():  # else sharded (FSDP/DeepSpeed) state
        check_model_file(path, accelerator.unwrap_model(model))
    accelerator.wait_for_everyone()
    try:
        accelerator.load_state(str(path))
    except Exception as exc:
        raise CheckpointError(
            f"{path}: Accelerate could not restore the checkpoint ({type(exc).__name__}: {exc}); it does not "
            "match this model and optimizer (another config?) or is damaged"
        ) from exc
    restore_rng_states(read[rng_file(accelerator.process_index)], path / rng_file(accelerator.process_index))
    restore_custom_states(custom_objects, read, path)
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
