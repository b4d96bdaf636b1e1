"""Files segaccel writes follow the process umask, as a plain `open(path, "w")` would.

Some writers make their files private whatever the umask: `tempfile.mkstemp` (0600),
`tempfile.mkdtemp` (0700) and safetensors' `save_file`/`save_model` (0600, through a temporary
file). A model folder copied to a shared disk would then be unreadable to others. `follow_umask`
gives such files the mode a plain write would have: `0o666 & ~umask` for files, `0o777 & ~umask`
for folders (0644/0755 under umask 022, 0640/0750 under 027). Imports nothing of segaccel.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux says it (`/proc/self/status`)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _lock:  # elsewhere the only way is to set it and put it back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def umask_mode(is_dir: bool = False, umask: int | None = None) -> int:
    """The mode a plain write gives a new file (`0o666 & ~umask`) or folder (`0o777 & ~umask`)."""
    mask = current_umask() if umask is None else umask
    return (0o777 if is_dir else 0o666) & ~mask


def follow_umask(path: str | os.PathLike, recursive: bool = True) -> None:
    """Give `path` (and, for a folder with `recursive`, all it holds) the umask's default mode.

    Symbolic links are left alone (and not followed); the executable bits of a file are kept
    where the umask allows them (a script stays runnable).
    """
    path = Path(path)
    umask = current_umask()
    todo = [path]
    while todo:
        p = todo.pop()
        if p.is_symlink():
            continue
        if p.is_dir():
            os.chmod(p, umask_mode(True, umask))
            if recursive:
                todo.extend(p.iterdir())
        elif p.is_file():
            mode = umask_mode(False, umask)
            if os.stat(p).st_mode & 0o111:
                mode |= 0o111 & ~umask
            os.chmod(p, mode)
