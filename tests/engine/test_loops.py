"""Loops: iteration counts, validation and checkpoint points, epochs, accumulation and clipping.

One iteration is one optimizer step: with `accumulative_counts: k` an iteration reads k batches,
and every interval (logging, validation, checkpoints, schedules) counts iterations.
"""

from itertools import islice
from types import SimpleNamespace

import pytest
import torch
from engine_helpers import load_model_weights, read_scalars, reset_accelerate

from segaccel.config import load_config
from segaccel.data import SegDataset
from segaccel.data.samplers import InfiniteSampler
from segaccel.engine.loop_context import LoopContext
from segaccel.engine.loops import EpochBasedTrainLoop, EpochSampler, IterBasedTrainLoop
from segaccel.engine.runner import Runner


def context(dataset_size=25, batch_size=2, processes=2, accumulative_counts=3):
    """What a train loop is built with: the loop never sees a Runner."""
    return LoopContext(
        accelerator=SimpleNamespace(num_processes=processes),
        train_dataset=range(dataset_size),
        train_batch_size=batch_size,
        accumulative_counts=accumulative_counts,
    )


def test_iter_loop_validation_and_checkpoint_points():
    loop = IterBasedTrainLoop(context(), max_iters=10, val_interval=4, val_begin=5)
    assert [i for i in range(1, 11) if loop.should_validate(i)] == [8, 10]  # and always the last
    assert [i for i in range(1, 11) if loop.should_checkpoint(i, 3)] == [3, 6, 9]
    assert not any(loop.should_checkpoint(i, -1) for i in range(1, 11))
    with pytest.raises(ValueError, match="max_iters must be positive"):
        IterBasedTrainLoop(context(), max_iters=0)


def test_epoch_loop_counts_epochs_of_full_steps():
    # 25 samples, 2 per process x 2 processes x 3 accumulation = 12 per step: 2 steps per epoch
    loop = EpochBasedTrainLoop(context(), max_epochs=5, val_interval=2, val_begin=3)
    assert loop.iters_per_epoch == 2 and loop.max_iters == 10
    assert [i for i in range(1, 11) if loop.should_validate(i)] == [8, 10]  # epochs 4 and 5 (the last)
    assert [i for i in range(1, 11) if loop.should_checkpoint(i, 2)] == [4, 8]  # every 2 epochs
    with pytest.raises(ValueError, match="fewer than one optimizer step needs"):
        EpochBasedTrainLoop(context(dataset_size=11), max_epochs=1)
    with pytest.raises(ValueError, match=r"not max_iters .*train_cfg.max_iters=null"):
        EpochBasedTrainLoop(context(), max_epochs=1, max_iters=1000)


def test_epoch_sampler_drops_the_remainder_and_resumes_mid_epoch():
    # 11 samples, global batch 2 x 2 = 4, 2 batches per epoch: 8 samples of each permutation
    def take(rank, world, batch, start=0, n=8):
        s = EpochSampler(
            11, batch, 8 // (batch * world), seed=3, rank=rank, world_size=world, start_batch=start
        )
        return list(islice(iter(s), n))

    one = take(0, 1, 4, n=24)
    epochs = [one[i : i + 8] for i in (0, 8, 16)]
    for e, chunk in enumerate(epochs):
        assert {pair[0] for pair in chunk} == {e}
        assert len({pair[1] for pair in chunk}) == 8  # 8 distinct samples, 3 left over
    assert [i for _, i in epochs[0]] != [i for _, i in epochs[1]]  # reshuffled
    # two processes together see the one-process global batches
    r0, r1 = take(0, 2, 2, n=12), take(1, 2, 2, n=12)
    for step in range(6):
        assert one[4 * step : 4 * step + 4] == r0[2 * step : 2 * step + 2] + r1[2 * step : 2 * step + 2]
    # resuming at global batch 3 (the middle of epoch 1) continues the same stream
    assert take(0, 1, 4, start=3, n=8) == one[12:20]


def make_runner(config, work_dir, overrides, optimizer=None):
    reset_accelerate()
    cfg = load_config(config, list(overrides))
    if optimizer is not None:  # replaced whole: a dotted override would merge into the base AdamW
        cfg["optim_wrapper"]["optimizer"] = optimizer
    return Runner(cfg, work_dir=work_dir)


def record_samples(monkeypatch) -> list:
    seen = []
    original = SegDataset.__getitem__

    def getitem(self, index):
        seen.append(index)
        return original(self, index)

    monkeypatch.setattr(SegDataset, "__getitem__", getitem)
    return seen


def test_epoch_based_training_run(tiny_config, tmp_path, monkeypatch, fresh_accelerate):
    seen = record_samples(monkeypatch)
    data = "{num_train: 11, num_val: 3, image_size: [32, 48], seed: 1}"
    runner = make_runner(
        tiny_config,
        tmp_path / "run",
        [
            "train_cfg={type: EpochBasedTrainLoop, max_epochs: 2, val_interval: 1, max_iters: null}",
            f"train_dataloader.dataset.synthetic={data}",
            f"val_dataloader.dataset.synthetic={data}",
            "default_hooks.checkpoint.interval=1",  # epochs, with this loop
            "default_hooks.logger.interval=5",
            "default_hooks.visualization.interval=4",  # overlays at multiples of 4 and at the end
            "param_scheduler=[]",
        ],
    )
    runner.train()
    assert runner.train_loop.iters_per_epoch == 5 and runner.train_loop.max_iters == 10
    assert [r["iter"] for r in read_scalars(tmp_path / "run", "val")] == [5, 10]
    assert [p.name for p in (tmp_path / "run" / "vis").iterdir()] == ["iter_10"]
    assert [r["iter"] for r in read_scalars(tmp_path / "run")] == [5, 10]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["iter_10", "iter_5"]
    train_seen = [s for s in seen if isinstance(s, tuple)]  # validation reads plain indices
    assert len(train_seen) == 20
    for epoch in (0, 1):
        indices = [i for e, i in train_seen if e == epoch]
        assert len(indices) == 10 and len(set(indices)) == 10


def test_accumulation_reads_k_batches_per_iteration_and_intervals_count_steps(
    tiny_config, tmp_path, monkeypatch, fresh_accelerate
):
    seen = record_samples(monkeypatch)
    runner = make_runner(
        tiny_config,
        tmp_path / "run",
        [
            "optim_wrapper.accumulative_counts=2",
            "train_cfg={type: IterBasedTrainLoop, max_iters: 4, val_interval: 100}",
            "val_dataloader=null",
            "default_hooks.logger.interval=2",
            "default_hooks.checkpoint.interval=2",
            "param_scheduler=[{type: PolyLR, power: 1.0, begin: 0, end: 4}]",
        ],
    )
    runner.train()
    assert [r["iter"] for r in read_scalars(tmp_path / "run")] == [2, 4]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["iter_2", "iter_4"]
    assert runner.lr_scheduler.last_iter == 4
    assert int(next(iter(runner.optimizer.state.values()))["step"]) == 4
    # 4 iterations x 2 micro-batches x 2 images: the first 16 positions of the training stream
    assert seen == list(islice(iter(InfiniteSampler(24, 2, seed=0)), 16))


# A BatchNorm-free model (GroupNorm in the head), no dropout, plain SGD with lr 1: one step moves
# every weight by exactly minus its gradient.
SGD_ONE_STEP = [
    "model.decode_head.norm_cfg={type: GN, num_groups: 1}",
    "model.decode_head.dropout_ratio=0.0",
    "model.backbone.drop_path_rate=0.0",
    "optim_wrapper.paramwise_cfg=null",
    "param_scheduler=[]",
    "train_cfg={type: IterBasedTrainLoop, max_iters: 1}",
    "val_dataloader=null",
]


def one_sgd_step(config, work_dir, monkeypatch, overrides):
    initial = {}
    original = Runner.build_model

    def build_model(self, *args, **kwargs):
        model = original(self, *args, **kwargs)
        initial.update({k: v.clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(Runner, "build_model", build_model)
    sgd = {"type": "SGD", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0}
    make_runner(config, work_dir, SGD_ONE_STEP + overrides, optimizer=sgd).train()
    final = load_model_weights(work_dir / "model")
    step = {k: initial[k] - final[k] for k in final if final[k].is_floating_point() and "norm" not in k}
    return step, read_scalars(work_dir)[0]


def test_accumulated_micro_batches_give_the_big_batch_gradient_and_clipping(
    tiny_config, tmp_path, monkeypatch, fresh_accelerate
):
    big, _ = one_sgd_step(tiny_config, tmp_path / "big", monkeypatch, ["train_dataloader.batch_size=4"])
    accumulated, _ = one_sgd_step(
        tiny_config,
        tmp_path / "accum",
        monkeypatch,
        ["train_dataloader.batch_size=2", "optim_wrapper.accumulative_counts=2"],
    )
    assert sum(v.abs().sum() for v in big.values()) > 0
    for k in big:
        torch.testing.assert_close(accumulated[k], big[k], rtol=1e-4, atol=1e-6, msg=k)

    # clipping by total norm: the logged grad_norm is the norm before clipping, the step has max_norm
    clipped, record = one_sgd_step(
        tiny_config,
        tmp_path / "clip",
        monkeypatch,
        ["train_dataloader.batch_size=4", "optim_wrapper.clip_grad={max_norm: 0.01, norm_type: 2}"],
    )
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in big.values()]))
    assert record["grad_norm"] == pytest.approx(float(total), rel=1e-4)
    assert total > 0.01
    clipped_norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(v) for v in clipped.values()])
    )
    assert float(clipped_norm) == pytest.approx(0.01, rel=1e-3)
    for k in big:
        torch.testing.assert_close(clipped[k], big[k] * (0.01 / total), rtol=1e-3, atol=1e-7, msg=k)
