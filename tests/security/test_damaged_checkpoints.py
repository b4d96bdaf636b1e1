"""Damaged checkpoints: an error naming the file and saying what to do, never a raw error or a resume
that goes on silently less exact. And a checkpoint write that fails (a full disk) keeps the last one.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from security_helpers import TINY_CONFIG, copy_run, train

from segaccel.config import load_config
from segaccel.engine.checkpoint import CheckpointError
from segaccel.engine.runner import Runner

OVERRIDES = [
    "train_cfg.val_interval=100",
    "default_hooks.checkpoint.interval=2",
    "default_hooks.checkpoint.save_best=null",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, work dir) of a 4-iteration run with checkpoints iter_2 and iter_4."""
    root = tmp_path_factory.mktemp("trained")
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    result = train(config, root / "run", "train_cfg.max_iters=4", *OVERRIDES)
    assert result.returncode == 0, result.stderr[-3000:]
    return config, root / "run"


def edit_state(change):
    def apply(ckpt):
        state = json.loads((ckpt / "segaccel_state.json").read_text())
        change(state)
        (ckpt / "segaccel_state.json").write_text(json.dumps(state))

    return apply


def truncate(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])


def weights_as(dtype=None, fill=None):
    def apply(ckpt):
        weights = load_file(str(ckpt / "model.safetensors"))
        name = "decode_head.conv_seg.weight"
        if dtype is not None:
            weights[name] = weights[name].to(dtype)
        if fill is not None:
            weights[name][0, 0, 0, 0] = fill
        save_file(weights, str(ckpt / "model.safetensors"))

    return apply


def rng_file(content):
    return lambda ckpt: torch.save(content, ckpt / "random_states_0.pkl")


ADVICE = r"resume from another checkpoint \(--resume .*iter_2\)"
# damage done to checkpoints/iter_4 -> the error it must give
DAMAGES = {
    "no model.safetensors": (lambda c: (c / "model.safetensors").unlink(), r"missing model\.safetensors"),
    "no RNG states": (lambda c: (c / "random_states_0.pkl").unlink(), r"missing random_states_0\.pkl"),
    "no LR schedule state": (
        lambda c: (c / "segaccel_custom_0.pkl").unlink(),
        r"missing segaccel_custom_0\.pkl",
    ),
    "RNG states swapped for another dict": (
        rng_file({"step": 0}),
        r"random_states_0\.pkl: expected the RNG states \['random_state', 'numpy_random_seed'",
    ),
    "RNG states that cannot be set": (
        rng_file({"random_state": 1, "numpy_random_seed": 2, "torch_manual_seed": torch.zeros(3)}),
        r"random_states_0\.pkl: the RNG states cannot be restored",
    ),
    "segaccel_state.json not JSON": (
        lambda c: (c / "segaccel_state.json").write_text('{"iteration": '),
        r"segaccel_state\.json: not valid JSON",
    ),
    "iteration -5": (
        edit_state(lambda s: s.update(iteration=-5)),
        r"`iteration` must be a whole number >= 0, got -5",
    ),
    "iteration a string": (
        edit_state(lambda s: s.update(iteration="4")),
        r"`iteration` must be a whole number",
    ),
    "best not an object": (edit_state(lambda s: s.update(best=[1])), r"`best` must be an object"),
    "truncated weights": (truncate, r"model\.safetensors: not a valid safetensors file"),
    "weights stored as int64": (
        weights_as(torch.int64),
        r"decode_head\.conv_seg\.weight: int64 in the file, float32 in the model",
    ),
    "a NaN weight": (weights_as(fill=float("nan")), r"decode_head\.conv_seg\.weight: 1 of \d+ values"),
    "the optimizer of another model": (
        lambda c: torch.save({"state": {}, "param_groups": []}, c / "optimizer.bin"),
        r"Accelerate could not restore the checkpoint",
    ),
}


@pytest.mark.parametrize("name", list(DAMAGES))
def test_a_damaged_checkpoint_is_named_with_what_to_do(name, trained, tmp_path, fresh_accelerate):
    config, run = trained
    work_dir = copy_run(run, tmp_path / "run")
    damage, message = DAMAGES[name]
    damage(work_dir / "checkpoints" / "iter_4")
    cfg = load_config(config, ["train_cfg.max_iters=6", *OVERRIDES])
    with pytest.raises(CheckpointError, match=message) as error:
        Runner(cfg, work_dir=work_dir, resume=True).train()
    assert "iter_4" in str(error.value)
    if "Accelerate could not" not in message:  # the advice: the other checkpoint, or a fresh start
        assert error.match(ADVICE)


def test_a_checkpoint_write_that_fails_keeps_the_last_one(trained, tmp_path, fresh_accelerate, monkeypatch):
    """A full disk mid-write (torch's 'unexpected pos'): a clear error, the last checkpoint intact."""
    from accelerate import Accelerator

    config, run = trained
    work_dir = copy_run(run, tmp_path / "run")
    original = Accelerator.save_state

    def disk_full(self, output_dir, **kwargs):
        original(self, output_dir, **kwargs)
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . unexpected pos 4416 vs 4310 (the disk is full)"
        )

    monkeypatch.setattr(Accelerator, "save_state", disk_full)
    cfg = load_config(config, ["train_cfg.max_iters=6", *OVERRIDES])
    failed = r"could not write the checkpoint .*iter_6 .*is the disk full"
    with pytest.raises(CheckpointError, match=failed) as e:
        Runner(cfg, work_dir=work_dir, resume=True).train()
    assert e.match(r"the last complete checkpoint, .*iter_4, is intact")
    ckpts = work_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["iter_2", "iter_4"]  # no temporary left, iter_4 kept
    assert json.loads((ckpts / "iter_4" / "segaccel_state.json").read_text())["iteration"] == 4
