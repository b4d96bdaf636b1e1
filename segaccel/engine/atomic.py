"""Atomic writes: a folder or file that readers may see is complete (old or new), never half-written.

Used by training checkpoints (`engine.checkpoint`) and exported model folders (`engine.export`).
The export stages pass the kill points `export_written` and `export_swapped`
(`engine.fault_injection`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segaccel.engine.fault_injection import kill_point


def replace_folder(new: Path, final: Path, stage_iteration: int | None = None) -> None:
    """Put the complete folder `new` at `final`, replacing what is there, never leaving a mix.

    A folder cannot be replaced by a rename in one step, so the old one is first renamed aside
    (`.old_<name>`), the new one renamed into place, then the old one deleted: a kill at any
    moment leaves `final` complete (old or new) or, between the renames, absent with the old
    copy kept beside it. With `stage_iteration`, the `export_swapped` kill point is passed.
    """
    new, final = Path(new), Path(final)
    old = final.parent / f".old_{final.name}"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    if stage_iteration is not None:
        kill_point("export_swapped", stage_iteration)
    os.replace(new, final)
    fsync_dir(final.parent)
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
    kill_point("export_written", iteration)
    replace_folder(tmp, final, stage_iteration=iteration)


def write_json_atomically(path: Path, data: dict[str, Any], allow_nan: bool = True) -> None:
    """Write `data` as JSON to `path` through a synced temporary file renamed into place.

    With `allow_nan=False` a NaN or infinite float is an error (`json.dump`'s strict mode).
    """
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, allow_nan=allow_nan)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames) to disk where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
