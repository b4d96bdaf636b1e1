"""Peak-memory measurements for the benchmarks: CUDA's allocator, or Linux's peak RSS on a CPU."""

from __future__ import annotations

from collections.abc import Callable

import torch


def status_kib(field: str) -> int | None:
    """A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`, ...), or None where Linux /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_cpu_peak() -> int | None:
    """Reset VmHWM to the current RSS; the RSS then (KiB), or None where that cannot be done."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return None
    return status_kib("VmRSS")


def peak_memory_mib(step: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory of one `step()`: CUDA's max allocated, or the growth of the CPU's peak RSS (MiB)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    base = reset_cpu_peak()
    step()
    hwm = status_kib("VmHWM")
    return (hwm - base) / 1024 if base is not None and hwm is not None else None
