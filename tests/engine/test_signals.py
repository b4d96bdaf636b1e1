"""SIGTERM and Ctrl-C: the run finishes its iteration, saves a checkpoint, says how to resume, exits.

Both go to the whole process group, DataLoader workers included, as a terminal's Ctrl-C does and as
torchrun passes a SIGTERM on: the workers (which PyTorch would end on SIGTERM) must keep serving
batches until the checkpoint is written. The signal is sent once the run's output shows it is
training (no timers): iteration 2 logged.
"""

import os
import select
import signal
import subprocess
import sys
import time

import pytest
from engine_helpers import ROOT, TRAIN_SCRIPT, read_scalars

from segaccel.config import load_config
from segaccel.engine.runner import Runner


def read_until(proc: subprocess.Popen, marker: bytes, deadline: float) -> bytes:
    """Everything the process writes to stderr until `marker` appears (fails if it exits first)."""
    out = b""
    fd = proc.stderr.fileno()
    while marker not in out:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"no {marker!r} before the deadline:\n{out.decode(errors='replace')[-3000:]}"
        chunk = os.read(fd, 65536)
        assert chunk, f"the run ended before {marker!r}:\n{out.decode(errors='replace')[-3000:]}"
        out += chunk
    return out


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_exits_with_how_to_resume(
    signum, tiny_config, tmp_path, fresh_accelerate
):
    name = signal.Signals(signum).name
    work_dir = tmp_path / "run"
    overrides = [
        "train_cfg.max_iters=100000",
        "train_cfg.val_interval=0",
        "default_hooks.checkpoint.interval=-1",
        "train_dataloader.num_workers=2",
        "optim_wrapper.accumulative_counts=2",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN_SCRIPT), str(tiny_config), "--work-dir", str(work_dir), *overrides],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, with its DataLoader workers (a terminal's job)
    )
    try:
        out = read_until(proc, b"Iter(train) [     2/100000]", time.monotonic() + 180)
        os.killpg(proc.pid, signum)
        _, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    text = (out + rest).decode(errors="replace")
    assert proc.returncode == 128 + signum, text[-3000:]
    assert f"received {name}: stopping after this iteration, with a checkpoint" in text
    stopped_at = read_scalars(work_dir)[-1]["iter"]  # the iteration it finished before stopping
    ckpt = work_dir / "checkpoints" / f"iter_{stopped_at}"
    assert f"training stopped by {name} at iteration {stopped_at}/100000; checkpoint saved to {ckpt}" in text
    assert f"python scripts/train.py {tiny_config} --work-dir {work_dir} --resume" in text
    assert "Traceback" not in text
    assert sorted(p.name for p in ckpt.parent.iterdir()) == [ckpt.name]

    # and the run resumes from it
    runner = Runner(
        load_config(tiny_config, [*overrides, f"train_cfg.max_iters={stopped_at + 1}"]),
        work_dir=work_dir,
        resume=True,
    )
    runner.train()
    assert [r["iter"] for r in read_scalars(work_dir)][-1] == stopped_at + 1
