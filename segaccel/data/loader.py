"""DataLoader settings that keep an accelerator fed: the worker count for `num_workers: auto`, worker setup.

The DataLoader itself is made by the engine's one factory; these are the data-side decisions it uses.
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import torch

from segaccel.registry import ConfigError

MAX_AUTO_WORKERS = 16  # ~130 samples/s per worker on the ADE20K pipeline: far beyond one accelerator's need


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's or a job's share)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_num_workers(value: Any, key: str = "num_workers", local_processes: int | None = None) -> int:
    """The DataLoader worker count a config's `num_workers` asks for: an int >= 0, or `auto`.

    `auto`: the CPUs available divided among the training processes of this machine
    (`local_processes`, default the `LOCAL_WORLD_SIZE` that `accelerate launch`/`torchrun` set), less
    one per process for the process itself (it runs the training step and collates), at most
    `MAX_AUTO_WORKERS`; 0 (load in the process) when a process has a single CPU.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        if local_processes is None:
            local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        per_process = available_cpus() // max(1, local_processes)
        return max(0, min(MAX_AUTO_WORKERS, per_process - 1))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}: expected a DataLoader worker count (an int >= 0) or 'auto', got {value!r}")
    return value


def worker_init_fn(worker_id: int) -> None:
    """Set up a DataLoader worker as mmengine does: OpenCV's own threads off, one torch thread.

    Each worker runs one sample at a time; a thread pool per worker would only compete with the
    other workers for the same cores. Augmentation randomness does not come from here: each sample
    draws from a generator seeded by (seed, epoch, index), so runs and resumes are bit-exact for
    any number of workers.
    """
    cv2.setNumThreads(0)
    torch.set_num_threads(1)
