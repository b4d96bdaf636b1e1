"""The benchmarks' peak-memory measurement sees a step's allocations (Linux peak RSS on a CPU)."""

import pytest
import torch

from segaccel.benchmark.memory import peak_memory_mib, reset_cpu_peak, status_kib


@pytest.mark.skipif(status_kib("VmHWM") is None or reset_cpu_peak() is None, reason="needs Linux /proc")
def test_peak_memory_of_a_step_counts_what_it_allocates():
    def step():  # 64 MiB, touched so that it is resident, then freed
        torch.ones(16 * 2**20, dtype=torch.float32).sum()

    peak = peak_memory_mib(step, torch.device("cpu"))
    assert 60 <= peak < 200
    assert peak_memory_mib(lambda: None, torch.device("cpu")) < 16
