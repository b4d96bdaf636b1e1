"""Exact resume: N iterations straight == N/2, Ctrl-C, `--resume`, N/2 — bit for bit, on a CPU.

Dropout and drop_path are active (the tiny model has both), so the RNG states must be restored; the
resumed half runs with a DataLoader worker while the straight run has none (augmentation is seeded
per sample, so workers change nothing), which also changes the config: the resume warns naming it.
"""

import os
import signal

import pytest
import torch
from engine_helpers import assert_same_tensors, load_model_weights, read_scalars, reset_accelerate

from segaccel.config import load_config
from segaccel.engine.loops import TrainingInterrupted
from segaccel.engine.runner import Runner


def make_runner(config, work_dir, overrides=(), **kwargs):
    reset_accelerate()
    cfg = load_config(config, ["default_hooks.checkpoint.interval=100", *overrides])
    return Runner(cfg, work_dir=work_dir, config_path=str(config), **kwargs)


def test_stop_with_ctrl_c_then_resume_gives_identical_weights(
    tiny_config, tmp_path, monkeypatch, fresh_accelerate
):
    straight = make_runner(tiny_config, tmp_path / "straight")
    straight.train()

    # Ctrl-C (a real SIGINT to this process) right after iteration 3 of 6
    original = Runner.after_train_iter

    def after_train_iter(self, iteration, metrics):
        original(self, iteration, metrics)
        if iteration == 3:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Runner, "after_train_iter", after_train_iter)
    stopped = make_runner(tiny_config, tmp_path / "resumed")
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with pytest.raises(TrainingInterrupted) as info:
        stopped.train()
    assert info.value.iteration == 3 and info.value.signum == signal.SIGINT
    assert "SIGINT at iteration 3/6" in str(info.value) and "--resume" in str(info.value)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored
    ckpts = tmp_path / "resumed" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["iter_3"]
    assert not (tmp_path / "resumed" / "model").exists()

    monkeypatch.setattr(Runner, "after_train_iter", original)
    resumed = make_runner(tiny_config, tmp_path / "resumed", ["train_dataloader.num_workers=1"], resume=True)
    resumed.train()

    # every weight, and the optimizer state, bit for bit
    assert_same_tensors(
        load_model_weights(tmp_path / "straight" / "model"),
        load_model_weights(tmp_path / "resumed" / "model"),
    )
    opt_a = torch.load(tmp_path / "straight" / "checkpoints" / "iter_6" / "optimizer.bin", weights_only=False)
    opt_b = torch.load(ckpts / "iter_6" / "optimizer.bin", weights_only=False)
    for key, state in opt_a["state"].items():
        for name, value in state.items():
            assert torch.equal(value, opt_b["state"][key][name]), (key, name)
    assert resumed.lr_scheduler.last_iter == 6
    # the logged losses of iterations 4-6 are the straight run's
    loss = {r["iter"]: r["loss"] for r in read_scalars(tmp_path / "straight")}
    loss_resumed = {r["iter"]: r["loss"] for r in read_scalars(tmp_path / "resumed")}
    assert sorted(loss_resumed) == [1, 2, 3, 4, 5, 6]
    assert all(loss_resumed[i] == loss[i] for i in (4, 5, 6))

    log = (tmp_path / "resumed" / "logs" / "train.log").read_text()
    assert "received SIGINT: stopping after this iteration" in log
    assert f"resumed from {ckpts / 'iter_3'} at iteration 3" in log
    assert "resuming with a config that differs" in log and "train_dataloader.num_workers: 0 -> 1" in log


def test_resume_warns_about_each_changed_key(tiny_config, tmp_path, fresh_accelerate):
    first = make_runner(
        tiny_config, tmp_path / "run", ["train_cfg.max_iters=2", "train_cfg.val_interval=100"]
    )
    first.train()
    again = make_runner(
        tiny_config,
        tmp_path / "run",
        ["train_cfg.max_iters=3", "train_cfg.val_interval=100", "optim_wrapper.optimizer.lr=0.002"],
        resume=True,
    )
    again.train()
    log = (tmp_path / "run" / "logs" / "train.log").read_text()
    assert "optim_wrapper.optimizer.lr: 0.001 -> 0.002" in log
    assert "train_cfg.max_iters: 2 -> 3" in log
    assert "train_dataloader" not in log.split("resuming with a config")[1].split("resumed from")[0]
    assert [r["iter"] for r in read_scalars(tmp_path / "run")] == [1, 2, 3]


def test_resume_path_must_be_a_complete_checkpoint(tiny_config, tmp_path, fresh_accelerate):
    half = tmp_path / "run" / "checkpoints" / "iter_4"
    half.mkdir(parents=True)
    (half / "model.safetensors").write_bytes(b"")
    runner = make_runner(tiny_config, tmp_path / "run", resume=str(half))
    with pytest.raises(FileNotFoundError, match="not a complete segaccel checkpoint"):
        runner.train()
    # `--resume` without a path finds no complete checkpoint: it starts from 0 with a warning
    assert make_runner(tiny_config, tmp_path / "run", resume=True)._resume_path() is None
