"""The benchmarks' peak-memory measurement sees a step's allocations (Linux peak RSS on a CPU)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from segaccel.benchmark.memory import reset_cpu_peak, status_kib

# Run in a fresh interpreter: in the test session's own process, memory freed by earlier tests may
# still be resident in the allocator's free lists, and a step served from it grows no RSS (seen in CI:
# 0.0 MiB).
MEASURE = """
import json, torch
from segaccel.benchmark.memory import peak_memory_mib

def step():  # 64 MiB, touched so that it is resident, then freed
    torch.ones(16 * 2**20, dtype=torch.float32).sum()

cpu = torch.device("cpu")
print(json.dumps([peak_memory_mib(step, cpu), peak_memory_mib(lambda: None, cpu)]))
"""


@pytest.mark.skipif(status_kib("VmHWM") is None or reset_cpu_peak() is None, reason="needs Linux /proc")
def test_peak_memory_of_a_step_counts_what_it_allocates():
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-c", MEASURE]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=root)
    peak, idle = json.loads(out.stdout.strip().splitlines()[-1])
    assert 60 <= peak < 200
    assert idle < 16
