"""Atomic writes that touch only what segaccel writes: never a half-written file, never a user's file.

Two kinds of writes:

- **a folder segaccel owns whole** (a training checkpoint `checkpoints/iter_<N>`): filled in a
  temporary folder beside it and renamed into place (`replace_folder`), so a folder with the final
  name is always complete;
- **files segaccel writes into a folder the user may share** (an exported `model/` or
  `best_model/`): written into a temporary folder beside it, then each file renamed over its old
  version one by one (`write_files_atomically`). Every file is complete (old or new) at every
  moment, and files of other names (a user's notes, sub-folders) are never touched.

Every file and folder put in place follows the process umask (`segaccel.file_modes`), also those
whose writer makes them private (safetensors, `tempfile.mkstemp`).

Temporary folders are named `.segaccel-tmp-<name>` / `.segaccel-old-<name>` and carry a marker
file (`.segaccel-temporary`) from their first moment: only folders with both the name and the
marker are ever cleaned up, so a user's `.tmp_x` or `.old_model` is left alone. The stages pass the
kill points `export_written` and `export_swapped` (`engine.fault_injection`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from segaccel.engine.fault_injection import kill_point
from segaccel.file_modes import follow_umask

TMP_PREFIX = ".segaccel-tmp-"
OLD_PREFIX = ".segaccel-old-"
MARKER = ".segaccel-temporary"


def temp_folder(final: Path) -> Path:
    """A fresh, marked temporary folder beside `final` (a stale one of ours is removed first)."""
    final = Path(final)
    tmp = final.parent / f"{TMP_PREFIX}{final.name}"
    remove_if_ours(tmp)
    if tmp.exists():
        raise FileExistsError(
            f"{tmp} exists and was not made by segaccel (it has no {MARKER} file); move it away, segaccel "
            "needs this name for a temporary folder"
        )
    tmp.mkdir(parents=True)
    (tmp / MARKER).touch()
    return tmp


def is_ours(path: Path) -> bool:
    """A temporary folder segaccel made: our name prefix and our marker inside."""
    path = Path(path)
    return (
        path.name.startswith((TMP_PREFIX, OLD_PREFIX))
        and path.is_dir()
        and not path.is_symlink()
        and (path / MARKER).is_file()
    )


def remove_if_ours(path: Path) -> bool:
    """Delete `path` if it is one of segaccel's temporary folders; whether it was."""
    if is_ours(path):
        shutil.rmtree(path)
        return True
    return False


def clean_temporaries(parent: Path) -> list[Path]:
    """Delete the temporary folders segaccel left in `parent` (and nothing else); what was deleted.

    An `.segaccel-old-<name>` whose `<name>` is missing (a kill between the two renames of
    `replace_folder`) is put back in place instead.
    """
    parent = Path(parent)
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for path in sorted(parent.iterdir()):
        if not is_ours(path):
            continue
        if path.name.startswith(OLD_PREFIX):
            final = parent / path.name.removeprefix(OLD_PREFIX)
            if not final.exists():
                (path / MARKER).unlink()
                os.replace(path, final)
                continue
        shutil.rmtree(path)
        removed.append(path)
    return removed


def replace_folder(new: Path, final: Path, stage_iteration: int | None = None) -> None:
    """Put the complete temporary folder `new` at `final` (a folder segaccel owns whole).

    A folder cannot be replaced by a rename in one step, so an old `final` is first renamed aside
    (`.segaccel-old-<name>`, marked), the new one renamed into place, then the old one deleted: a
    kill at any moment leaves `final` complete (old or new) or, between the renames, absent with
    the old copy kept beside it (`clean_temporaries` puts it back). With `stage_iteration`, the
    `export_swapped` kill point is passed.
    """
    new, final = Path(new), Path(final)
    old = final.parent / f"{OLD_PREFIX}{final.name}"
    remove_if_ours(old)
    (new / MARKER).unlink(missing_ok=True)
    follow_umask(new)  # safetensors and mkstemp write 0600: the folder reads as any other written file
    if final.exists():
        (final / MARKER).touch()
        os.replace(final, old)
    if stage_iteration is not None:
        kill_point("export_swapped", stage_iteration)
    os.replace(new, final)
    fsync_dir(final.parent)
    remove_if_ours(old)


def write_files_atomically(
    final: Path,
    write: Callable[[Path], None],
    iteration: int = 0,
    owned: Iterable[str] = (),
    keep: Callable[[Path], bool] = lambda path: False,
) -> list[str]:
    """Call `write(tmp)` to fill a fresh temporary folder, then move its files into `final` one by one.

    Each file replaces its namesake in `final` atomically (`os.replace`); files of other names in
    `final` are left alone. `owned` names the files segaccel writes there: one of them that this
    write did not produce (a `metrics.json` of an earlier export, now without metrics) is removed,
    so the folder never mixes this export with a stale file of the last. `keep(existing)` says an
    existing file must stay (a README written by hand) though the write produced one. When `final`
    does not exist yet, the whole folder is renamed into place at once. Returns the names written.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise NotADirectoryError(f"{final} exists and is not a folder; move it away (nothing was written)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(final)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kill_point("export_written", iteration)
    follow_umask(tmp)  # safetensors and mkstemp write 0600: every file as a plain write makes it
    names = sorted(p.name for p in tmp.iterdir() if p.name != MARKER)
    if not final.exists():
        kill_point("export_swapped", iteration)
        (tmp / MARKER).unlink()
        os.replace(tmp, final)
        fsync_dir(final.parent)
        return names
    for i, name in enumerate(names):
        target = final / name
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(f"{target} is a folder; segaccel writes a file of that name there")
        if target.exists() and keep(target):
            continue
        os.replace(tmp / name, target)
        if i == 0:
            kill_point("export_swapped", iteration)
    for name in owned:
        stale = final / name
        if name not in names and stale.is_file() and not keep(stale):
            stale.unlink()
    fsync_dir(final)
    shutil.rmtree(tmp, ignore_errors=True)
    return names


def write_json_atomically(path: Path, data: dict[str, Any], allow_nan: bool = True) -> None:
    """Write `data` as JSON to `path` through a synced temporary file renamed into place.

    With `allow_nan=False` a NaN or infinite float is an error (`json.dump`'s strict mode).
    """
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
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
