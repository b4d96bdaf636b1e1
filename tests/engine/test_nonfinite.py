"""NaN/inf losses and gradients: stop after saving the last good state, or skip the step (counted).

NaNs are injected into the model's loss (or an infinite gradient into the classifier weight) at a
chosen iteration; with one micro-batch per step, call `n` of `Segmentor.loss` is iteration `n`.
"""

import pytest
import torch
from engine_helpers import load_model_weights, read_scalars

from segaccel.config import load_config
from segaccel.engine.loops import IterBasedTrainLoop, NonFiniteLossError
from segaccel.engine.runner import Runner
from segaccel.models.segmentor import Segmentor
from segaccel.registry import ConfigError


class InfiniteGradient(torch.autograd.Function):
    """Adds 0 to the loss, but sends an infinite gradient to `x`."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.new_zeros(())

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.full_like(x, float("inf"))


def inject(monkeypatch, at_call: int, kind: str) -> None:
    original = Segmentor.loss
    calls = {"n": 0}

    def loss(self, inputs, data_samples):
        losses = original(self, inputs, data_samples)
        calls["n"] += 1
        if calls["n"] == at_call:
            if kind == "nan":
                losses["decode.loss_ce"] = losses["decode.loss_ce"] * float("nan")
            else:
                weight = self.decode_head.conv_seg.weight
                losses["decode.loss_ce"] = losses["decode.loss_ce"] + InfiniteGradient.apply(weight)
        return losses

    monkeypatch.setattr(Segmentor, "loss", loss)


def make_runner(config, work_dir, overrides=()):
    cfg = load_config(
        config,
        ["train_cfg.val_interval=100", "default_hooks.checkpoint.interval=100", *overrides],
    )
    return Runner(cfg, work_dir=work_dir)


def adamw_steps(runner) -> int:
    return int(next(iter(runner.optimizer.state.values()))["step"])


def test_nan_loss_stops_after_saving_the_last_good_state(
    tiny_config, tmp_path, monkeypatch, fresh_accelerate
):
    inject(monkeypatch, at_call=3, kind="nan")
    rng_at_start = {}
    original_run_iter = IterBasedTrainLoop.run_iter

    def run_iter(self, data_iter):
        rng_at_start[self.iter + 1] = torch.get_rng_state()
        return original_run_iter(self, data_iter)

    monkeypatch.setattr(IterBasedTrainLoop, "run_iter", run_iter)
    runner = make_runner(tiny_config, tmp_path / "run")
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    message = str(info.value)
    assert "non-finite loss at iteration 3: decode.loss_ce=nan" in message
    assert info.value.iteration == 3 and info.value.terms == ["decode.loss_ce"]
    last_good = tmp_path / "run" / "checkpoints" / "iter_2"
    assert f"the last good state (after iteration 2) is saved to {last_good}" in message

    # the checkpoint is the state after iteration 2: the failing step changed no weight, and the RNG
    # states are those at the start of iteration 3 (resuming replays the failing iteration exactly)
    saved = load_model_weights(last_good)
    live = runner.unwrapped_model.state_dict()
    assert all(torch.equal(saved[k], live[k]) for k in saved)
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
    rng = torch.load(last_good / "random_states_0.pkl", weights_only=False)
    assert torch.equal(rng["torch_manual_seed"], rng_at_start[3])
    assert adamw_steps(runner) == 2
    assert "non-finite loss at iteration 3" in (tmp_path / "run" / "logs" / "train.log").read_text()


def test_skip_nonfinite_skips_and_counts_the_step(tiny_config, tmp_path, monkeypatch, fresh_accelerate):
    inject(monkeypatch, at_call=2, kind="nan")
    runner = make_runner(
        tiny_config, tmp_path / "run", ["train_cfg.max_iters=4", "optim_wrapper.skip_nonfinite=true"]
    )
    runner.train()
    records = {r["iter"]: r for r in read_scalars(tmp_path / "run")}
    assert [records[i]["nonfinite_skipped"] for i in (1, 2, 3, 4)] == [0, 1, 0, 0]
    assert "loss" not in records[2] and all(
        torch.isfinite(torch.tensor(records[i]["loss"])) for i in (1, 3, 4)
    )
    assert adamw_steps(runner) == 3  # 4 iterations, one step skipped
    assert runner.lr_scheduler.last_iter == 4  # the schedule counts iterations
    weights = load_model_weights(tmp_path / "run" / "model")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    log = (tmp_path / "run" / "logs" / "train.log").read_text()
    assert "non-finite loss or gradient at iteration 2: decode.loss_ce=nan: step skipped" in log
    assert "skipped optimizer steps during training: nonfinite_skipped=1" in log


def test_infinite_gradient_stops_naming_the_parameter(tiny_config, tmp_path, monkeypatch, fresh_accelerate):
    inject(monkeypatch, at_call=2, kind="inf_grad")
    runner = make_runner(tiny_config, tmp_path / "run")
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite gradient at iteration 2: grad_norm=inf"
    ) as info:
        runner.train()
    assert "decode_head.conv_seg.weight" in str(info.value)
    assert (tmp_path / "run" / "checkpoints" / "iter_1").is_dir()


def test_grad_scaler_overflow_skips_are_counted(tiny_config, tmp_path, monkeypatch, fresh_accelerate):
    """fp16's grad scaler (here a real torch GradScaler on the CPU) skips an overflowing step."""
    inject(monkeypatch, at_call=2, kind="inf_grad")
    runner = make_runner(tiny_config, tmp_path / "run", ["train_cfg.max_iters=3"])
    runner.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    runner.train()
    records = {r["iter"]: r for r in read_scalars(tmp_path / "run")}
    assert [records[i]["overflow_skipped"] for i in (1, 2, 3)] == [0, 1, 0]
    assert adamw_steps(runner) == 2
    assert runner.accelerator.scaler.get_scale() == 2.0**7  # halved once, by the overflow
    assert (tmp_path / "run" / "checkpoints" / "iter_3" / "scaler.pt").is_file()


def test_skip_nonfinite_belongs_under_optim_wrapper(tiny_config, tmp_path, fresh_accelerate):
    with pytest.raises(ConfigError, match="optim_wrapper.skip_nonfinite"):
        make_runner(tiny_config, tmp_path / "run", ["skip_nonfinite=true"])
