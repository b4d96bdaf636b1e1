"""Runs killed with SIGKILL at many points, then resumed with `--resume`.

`SEGACCEL_TEST_KILL_AT=<point>` with `SEGACCEL_TEST_KILL_AT_ITER=<N>` makes `scripts/train.py` kill
itself when it reaches that point at iteration N (deterministic, not timed; see
segaccel/engine/fault_injection.py):
between checkpoints (`after_step`), in the middle of validation (`validation`), at each stage of a
checkpoint write, and at each stage of a model export (the final `model/` and `best_model/`).

For every point: the killed run leaves only complete `iter_<N>` checkpoints and never a half-written
model folder; `--resume` continues from the last complete checkpoint, losing at most
`default_hooks.checkpoint.interval` iterations, and the final weights equal an uninterrupted run's.
Runs go two at a time, one thread each (the same arithmetic as the uninterrupted run).
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import ROOT, TINY_CONFIG, TRAIN_SCRIPT, assert_same_tensors, load_model_weights

from segaccel.engine.checkpoint import STATE_FILE
from segaccel.engine.fault_injection import CHECKPOINT_STAGES, KILL_POINTS

INTERVAL = 2
OVERRIDES = [
    "train_cfg.max_iters=6",
    "train_cfg.val_interval=3",  # validation (and a new best_model) at 3 and 6
    f"default_hooks.checkpoint.interval={INTERVAL}",
    "default_hooks.checkpoint.max_keep_ckpts=2",
    "default_hooks.checkpoint.save_best=mIoU",
]
# (point, iteration): where each run is killed
KILLS = [
    ("after_step", 3),  # a step taken, between checkpoints
    ("validation", 3),  # in the middle of a validation pass
    *[(stage, 4) for stage in CHECKPOINT_STAGES],  # each stage of writing iter_4
    ("export_written", 3),  # best_model/ written beside its place, not yet swapped in
    ("export_written", 6),  # the final model/, likewise
    ("export_swapped", 6),  # between the two renames of the final export
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def command(config: Path, work_dir: Path, *args: str) -> list[str]:
    return [sys.executable, str(TRAIN_SCRIPT), str(config), "--work-dir", str(work_dir), *args, *OVERRIDES]


def run_all(jobs: dict[str, tuple[list[str], dict]], parallel: int = 2) -> dict[str, tuple[int, str]]:
    """Run the commands `parallel` at a time; `{name: (returncode, stderr)}`."""
    results, pending, running = {}, list(jobs.items()), {}
    while pending or running:
        while pending and len(running) < parallel:
            name, (cmd, env) = pending.pop(0)
            running[name] = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
        name = next(iter(running))
        _, err = running[name].communicate(timeout=300)
        results[name] = (running.pop(name).returncode, err)
    return results


def complete_model(folder: Path) -> bool:
    return all((folder / f).is_file() for f in ("config.json", "model.safetensors", "README.md"))


@pytest.mark.e2e
def test_killed_anywhere_then_resumed_equals_an_uninterrupted_run(tmp_path):
    assert {point for point, _ in KILLS} == set(KILL_POINTS)  # every kill point is exercised
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    name = {kill: f"{kill[0]}@{kill[1]}" for kill in KILLS}
    killed = run_all(
        {
            name[kill]: (
                command(config, tmp_path / name[kill]),
                {**ENV, "SEGACCEL_TEST_KILL_AT": kill[0], "SEGACCEL_TEST_KILL_AT_ITER": str(kill[1])},
            )
            for kill in KILLS
        }
        | {"straight": (command(config, tmp_path / "straight"), ENV)}
    )
    assert killed["straight"][0] == 0, killed["straight"][1][-3000:]
    for kill in KILLS:
        code, err = killed[name[kill]]
        assert code == -signal.SIGKILL, (kill, err[-3000:])
        work = tmp_path / name[kill]
        ckpts = sorted(p.name for p in (work / "checkpoints").iterdir() if p.name.startswith("iter_"))
        assert all((work / "checkpoints" / c / STATE_FILE).is_file() for c in ckpts), (kill, ckpts)
        for folder in ("model", "best_model"):  # absent or complete, never half-written
            assert not (work / folder).exists() or complete_model(work / folder), (kill, folder)
    # killed when the final export was about to be moved into place: the old folder is not there
    # (first export), the new one waits beside it, complete
    assert complete_model(tmp_path / "export_swapped@6" / ".segaccel-tmp-model")

    resumed = run_all(
        {name[kill]: (command(config, tmp_path / name[kill], "--resume"), ENV) for kill in KILLS}
    )
    final = load_model_weights(tmp_path / "straight" / "model")
    for kill in KILLS:
        code, err = resumed[name[kill]]
        assert code == 0, (kill, err[-3000:])
        work = tmp_path / name[kill]
        start = re.search(r"resumed from \S+ at iteration (\d+)", err)
        assert start, (kill, err[-2000:])
        assert kill[1] - int(start.group(1)) <= INTERVAL, (kill, start.group(0))
        assert_same_tensors(final, load_model_weights(work / "model"))
        assert complete_model(work / "best_model")
        leftovers = [p.name for p in work.iterdir() if p.name.startswith(".segaccel-")]
        assert not leftovers, (kill, leftovers)
