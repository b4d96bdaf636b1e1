"""Atomic checkpoints: runs killed (SIGKILL) at each named stage of a checkpoint write, then resumed.

`SEGACCEL_TEST_KILL_AT=<stage>` and `SEGACCEL_TEST_KILL_AT_ITER=<N>` (a test facility, see
segaccel/engine/fault_injection.py) make `scripts/train.py` kill itself at that point of the write,
deterministically. Checkpoints every 2 iterations (1 kept), killed while writing iteration 4's:
`--resume` must pick the latest *complete* `iter_<N>` and ignore a half-written `.segaccel-tmp-*` folder.
The five runs are independent and run side by side, one thread each
(several multi-threaded runs on few cores would mostly wait for each other).
"""

import os
import signal
import subprocess
import sys

import pytest
import torch
from engine_helpers import ROOT, TRAIN_SCRIPT, assert_same_tensors, load_model_weights

from segaccel.config import load_config
from segaccel.engine.checkpoint import STATE_FILE, latest_checkpoint
from segaccel.engine.fault_injection import CHECKPOINT_STAGES
from segaccel.engine.runner import Runner

OVERRIDES = [
    "train_cfg.val_interval=100",
    "default_hooks.checkpoint.interval=2",
    "default_hooks.checkpoint.max_keep_ckpts=1",
]

# stage -> (folders left behind, the checkpoint --resume picks)
EXPECTED = {
    "before_save": (["iter_2"], "iter_2"),
    "files_written": ([".segaccel-tmp-iter_4", "iter_2"], "iter_2"),  # Accelerate's files, no state file
    "state_written": ([".segaccel-tmp-iter_4", "iter_2"], "iter_2"),  # complete, but not renamed
    "renamed": (["iter_2", "iter_4"], "iter_4"),  # not pruned yet
    "pruned": (["iter_4"], "iter_4"),
}


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def train_command(config, work_dir, *args):
    return [sys.executable, str(TRAIN_SCRIPT), str(config), "--work-dir", str(work_dir), *args, *OVERRIDES]


@pytest.mark.e2e
def test_killed_at_each_stage_resume_picks_the_last_complete_checkpoint(
    tiny_config, tmp_path, fresh_accelerate
):
    assert list(EXPECTED) == list(CHECKPOINT_STAGES)
    runs = {
        stage: subprocess.Popen(
            train_command(tiny_config, tmp_path / stage),
            cwd=ROOT,
            env={**ONE_THREAD, "SEGACCEL_TEST_KILL_AT": stage, "SEGACCEL_TEST_KILL_AT_ITER": "4"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stage in EXPECTED
    }
    for stage, proc in runs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, (stage, err[-3000:])

    for stage, (left, picked) in EXPECTED.items():
        ckpts = tmp_path / stage / "checkpoints"
        assert sorted(p.name for p in ckpts.iterdir()) == left, stage
        assert latest_checkpoint(ckpts).name == picked, stage
        runner = Runner(load_config(tiny_config, OVERRIDES), work_dir=tmp_path / stage, resume=True)
        assert runner._resume_path() == ckpts / picked, stage  # what `--resume` will load
    assert (
        tmp_path / "state_written" / "checkpoints" / ".segaccel-tmp-iter_4" / STATE_FILE
    ).is_file()  # looks complete

    # `--resume` after the nastiest stage (a complete but unrenamed folder) continues from iteration 2
    # and ends where an uninterrupted run does (also on one thread: the same arithmetic)
    work_dir = tmp_path / "state_written"
    result = subprocess.run(
        train_command(tiny_config, work_dir, "--resume"),
        cwd=ROOT,
        env=ONE_THREAD,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from {work_dir / 'checkpoints' / 'iter_2'} at iteration 2" in result.stderr
    assert sorted(p.name for p in (work_dir / "checkpoints").iterdir()) == ["iter_6"]  # the temporary is gone
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Runner(load_config(tiny_config, OVERRIDES), work_dir=tmp_path / "straight").train()
    finally:
        torch.set_num_threads(threads)
    assert_same_tensors(
        load_model_weights(tmp_path / "straight" / "model"), load_model_weights(work_dir / "model")
    )
