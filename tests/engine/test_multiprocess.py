"""Two CPU processes (gloo): `accelerate launch --multi_gpu --num_processes 2 scripts/train.py ...`.

On a machine without a GPU this launches two processes; the runner has Accelerate set up gloo for
them (else each would train alone — the test asserts the world size it got). The validation set has
7 same-size images, batches of 2: not divisible by 2 processes x 2, so the shards are unequal
(4 and 3 images) and a padded duplicate would change the figures. The 2-process validation of the
final model must equal a 1-process evaluation of the exported model.
"""

import subprocess

import pytest
import torch
from engine_helpers import ROOT, TRAIN_SCRIPT, read_scalars, two_process_launch

from segaccel import Segmentor
from segaccel.config import load_config
from segaccel.engine.runner import Runner


@pytest.mark.e2e
def test_two_cpu_processes_validate_as_one(tiny_config, tmp_path, fresh_accelerate):
    work_dir = tmp_path / "run"
    overrides = ["train_cfg.max_iters=2", "train_cfg.val_interval=1", "default_hooks.checkpoint.interval=1"]
    launch = two_process_launch()
    result = subprocess.run(
        [*launch, str(TRAIN_SCRIPT), str(tiny_config), "--work-dir", str(work_dir), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    log = (work_dir / "logs" / "train.log").read_text()
    assert "processes           : 2 (MULTI_CPU)" in log  # the world size we got
    assert "batch               : 2 per process x 2 processes x 1 accumulation = 4 per iteration" in log
    for name in ("iter_1", "iter_2"):  # every process's RNG state in every checkpoint
        files = {p.name for p in (work_dir / "checkpoints" / name).iterdir()}
        assert {"random_states_0.pkl", "random_states_1.pkl", "segaccel_state.json"} <= files
    # the LR schedule stepped once per optimizer step, not once per process
    schedule = torch.load(work_dir / "checkpoints" / "iter_2" / "segaccel_custom_0.pkl", weights_only=True)
    assert schedule == {"last_iter": 2}
    val = read_scalars(work_dir, "val")
    assert [r["iter"] for r in val] == [1, 2]

    # one process evaluates the exported model on the same 7 images
    runner = Runner(load_config(tiny_config), work_dir=tmp_path / "one")
    one = runner.test(model=Segmentor.from_pretrained(work_dir / "model"), loader_key="val_dataloader")
    two = {k: v for k, v in val[-1].items() if k not in ("mode", "iter")}
    assert {k: one[k] for k in two} == two
    assert two["aAcc"] < 100 and two["mAcc"] != 25.0  # predicts several of the 4 classes: the check bites
