"""The loops: `IterBasedTrainLoop`, `EpochBasedTrainLoop`, `ValLoop` and `TestLoop`, as in MMEngine.

A loop runs on a `LoopContext` (accelerator, prepared model, optimizer, scheduler, settings) and
calls back through its `LoopHooks` (checkpoints, the best model, stop requests, overlays): it never
sees the Runner that built them (see `segaccel.engine.loop_context`).

One train iteration is one optimizer step (`accumulative_counts` micro-batches, see
`segaccel.engine.train_step`); every interval and schedule counts optimizer steps.
`IterBasedTrainLoop` validates every `val_interval` iterations from `val_begin` on, and after the
last iteration. `EpochBasedTrainLoop` counts `max_epochs`, `val_interval` and `val_begin` in epochs
of `len(dataset) // (batch_size x processes x accumulative_counts)` iterations each.

A non-finite loss or gradient stops the run (`NonFiniteLossError`) after the hooks saved the last
good state; with `optim_wrapper.skip_nonfinite: true` the step is skipped and counted in the log
(`nonfinite_skipped`). Steps skipped by the fp16 grad scaler are counted as `overflow_skipped`.

Bad samples (`skip_bad_samples: true` in a dataset config): the batches report how many bad rows
were skipped for them (`SKIPPED_KEY`, see segaccel/data/collate.py), whichever DataLoader worker read
them. Training logs `bad_samples_skipped` per log interval, summed over processes, and the run's
total at the end; evaluation drops bad samples (none is evaluated twice) and logs once how many were
skipped and how many the metrics cover.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch

from segaccel.data.samplers import InfiniteSampler
from segaccel.engine.eval_loops import TestLoop, ValLoop, sync_buffers
from segaccel.engine.logging import logger, progress_bar
from segaccel.engine.loop_context import LoopContext, NonFiniteLossError, TrainingInterrupted
from segaccel.engine.train_step import (
    IterOutput,
    capture_rng_state,
    memory_mb,
    optimizer_step,
    restore_rng_state,
)

__all__ = [
    "IterBasedTrainLoop",
    "EpochBasedTrainLoop",
    "EpochSampler",
    "ValLoop",
    "TestLoop",
    "LoopContext",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "sync_buffers",
]


class IterBasedTrainLoop:
    """Train for `max_iters` optimizer steps, validating every `val_interval` from `val_begin`."""

    def __init__(
        self,
        context: LoopContext,
        max_iters: int,
        val_interval: int = 1000,
        val_begin: int = 1,
        max_epochs: None = None,
    ) -> None:
        if max_epochs is not None:
            raise ValueError(
                "train_cfg: IterBasedTrainLoop counts max_iters, not max_epochs (for epochs use "
                "type: EpochBasedTrainLoop; a max_epochs merged from a base config is removed by "
                "setting it to null)"
            )
        if max_iters is None or max_iters <= 0:
            raise ValueError(f"train_cfg.max_iters must be positive, got {max_iters}")
        self.context = context
        self.max_iters = int(max_iters)
        self.val_interval = int(val_interval)
        self.val_begin = int(val_begin)
        self.iter = 0
        self.skipped = {"nonfinite_skipped": 0, "overflow_skipped": 0}
        self.bad_samples_skipped = 0  # in this run (since the start or resume), all processes and workers

    def should_validate(self, iteration: int) -> bool:
        """Validate after step `iteration` (1-based)?"""
        if iteration == self.max_iters:
            return True
        return self.val_interval > 0 and iteration >= self.val_begin and iteration % self.val_interval == 0

    def should_checkpoint(self, iteration: int, interval: int) -> bool:
        """Save a checkpoint after step `iteration` for `default_hooks.checkpoint.interval`?"""
        return interval > 0 and iteration % interval == 0

    def build_sampler(
        self,
        dataset_size: int,
        batch_size: int,
        seed: int,
        shuffle: bool,
        rank: int,
        world_size: int,
        start_batch: int,
    ) -> InfiniteSampler:
        """The training sampler: one endless seeded stream, `start_batch` micro-batches skipped."""
        return InfiniteSampler(
            dataset_size,
            batch_size,
            seed=seed,
            shuffle=shuffle,
            rank=rank,
            world_size=world_size,
            start_batch=start_batch,
        )

    def run(self, data_iter: Iterator[dict[str, Any]]) -> dict[str, float]:
        ctx = self.context
        acc = ctx.accelerator
        model = ctx.model
        model.train()
        log_interval = ctx.log_interval
        sums: dict[str, torch.Tensor] = {}
        counters = dict.fromkeys(self._counter_keys(), 0)
        count = window = 0
        step_time = data_time = 0.0
        last_metrics: dict[str, float] = {}
        if ctx.scalar_logger is not None:
            ctx.scalar_logger.start(self.iter)
        bar = progress_bar(
            total=self.max_iters, initial=self.iter, desc="train", is_main=acc.is_main_process, leave=False
        )
        try:
            while self.iter < self.max_iters:
                rng_state = capture_rng_state()
                t0 = time.perf_counter()
                try:
                    out = self.run_iter(data_iter)
                except NonFiniteLossError as err:
                    ctx.optimizer.zero_grad(set_to_none=True)
                    restore_rng_state(rng_state)
                    raise ctx.hooks.on_nonfinite(err, self.iter) from None
                self.iter += 1
                window += 1
                step_time += time.perf_counter() - t0
                data_time += out.data_time
                if out.skipped_nonfinite:
                    counters["nonfinite_skipped"] += 1
                    self.skipped["nonfinite_skipped"] += 1
                elif out.skipped_overflow:
                    counters["overflow_skipped"] += 1
                    self.skipped["overflow_skipped"] += 1
                if "bad_samples_skipped" in counters:
                    counters["bad_samples_skipped"] += out.bad_samples_skipped
                if not out.skipped_nonfinite:  # a skipped step's NaN would hide the interval's losses
                    for k, v in out.log_vars.items():
                        sums[k] = sums.get(k, 0.0) + v
                    if out.grad_norm is not None and not out.skipped_overflow:
                        sums["grad_norm"] = sums.get("grad_norm", 0.0) + out.grad_norm
                    count += 1
                bar.update(1)
                if self.iter % log_interval == 0 or self.iter == self.max_iters:
                    scalars = {"lr": ctx.lr_scheduler.get_last_lr()[0]}
                    scalars.update(self._reduce_for_log(sums, count))
                    scalars.update(self._reduce_counters(counters))
                    scalars["time"] = step_time / window
                    scalars["data_time"] = data_time / window
                    scalars["memory"] = memory_mb(acc.device)
                    if ctx.scalar_logger is not None:
                        ctx.scalar_logger.log("train", self.iter, scalars)
                    bar.set_postfix(loss=f"{scalars.get('loss', float('nan')):.4f}")
                    sums, count, window, step_time, data_time = {}, 0, 0, 0.0, 0.0
                    counters = dict.fromkeys(counters, 0)
                metrics = None
                if self.should_validate(self.iter) and ctx.val_loop is not None:
                    metrics = last_metrics = ctx.val_loop.run(iteration=self.iter)
                    model.train()
                ctx.hooks.after_train_iter(self.iter, metrics)
                if self.iter < self.max_iters and ctx.hooks.stop_requested():
                    raise ctx.hooks.on_stop(self.iter)
        finally:
            bar.close()
        if any(self.skipped.values()) and acc.is_main_process:
            logger.warning(
                "skipped optimizer steps during training: "
                + ", ".join(f"{k}={v}" for k, v in self.skipped.items() if v)
            )
        if self._skips_bad_samples() and acc.is_main_process:
            total = self.bad_samples_skipped
            (logger.warning if total else logger.info)(
                f"skip_bad_samples: {total} bad training sample(s) skipped in this run (all processes and "
                "DataLoader workers); the next good sample stood in for each"
            )
        return last_metrics

    def _skips_bad_samples(self) -> bool:
        """Does the training dataset skip bad samples (`skip_bad_samples: true`)?"""
        return bool(getattr(self.context.train_dataset, "skip_bad_samples", False))

    def _counter_keys(self) -> list[str]:
        keys = []
        if self.context.skip_nonfinite:
            keys.append("nonfinite_skipped")
        if self.context.accelerator.scaler is not None:
            keys.append("overflow_skipped")
        if self._skips_bad_samples():
            keys.append("bad_samples_skipped")
        return keys

    def _reduce_counters(self, counters: dict[str, int]) -> dict[str, int]:
        """The interval's counters for the log: `bad_samples_skipped` summed over processes.

        (Skipped steps are agreed on by all processes already.) Every process reaches the log step at
        the same iteration, so the reduction is collective.
        """
        out = dict(counters)
        if "bad_samples_skipped" in out:
            acc = self.context.accelerator
            count = int(out["bad_samples_skipped"])
            if acc.num_processes > 1:
                total = torch.tensor([count], dtype=torch.int64, device=acc.device)
                count = int(acc.reduce(total, reduction="sum").item())
            out["bad_samples_skipped"] = count
            self.bad_samples_skipped += count
        return out

    def run_iter(self, data_iter: Iterator[dict[str, Any]]) -> IterOutput:
        """One optimizer step over `accumulative_counts` micro-batches (`train_step.optimizer_step`)."""
        return optimizer_step(self.context, data_iter, self.iter)

    def _reduce_for_log(self, sums: dict[str, Any], count: int) -> dict[str, float]:
        if not sums or count == 0:
            return {}
        acc = self.context.accelerator
        keys = sorted(sums)
        vals = (
            torch.stack([torch.as_tensor(sums[k], dtype=torch.float32, device=acc.device) for k in keys])
            / count
        )
        if acc.num_processes > 1:
            vals = acc.reduce(vals, reduction="mean")
        ordered = [k for k in keys if k not in ("loss", "grad_norm")] + [
            k for k in ("loss", "grad_norm") if k in sums
        ]
        values = dict(zip(keys, vals.tolist()))
        return {k: values[k] for k in ordered}


class EpochSampler(InfiniteSampler):
    """`(epoch, index)` pairs epoch by epoch: `batches_per_epoch` global batches of each permutation.

    Global batch `g` is batch `g % batches_per_epoch` of epoch `g // batches_per_epoch`; the
    samples of an epoch's permutation left over after its last full global batch are not used
    that epoch (as `drop_last`), so every process gets a full batch at every step. `start_batch`
    global batches are skipped (resume, also in the middle of an epoch).
    """

    def __init__(self, dataset_size: int, batch_size: int, batches_per_epoch: int, **kwargs: Any) -> None:
        super().__init__(dataset_size, batch_size, **kwargs)
        if batches_per_epoch * batch_size * self.world_size > dataset_size:
            raise ValueError(
                f"EpochSampler: {batches_per_epoch} batches of {batch_size} x {self.world_size} processes "
                f"do not fit in {dataset_size} samples"
            )
        self.batches_per_epoch = batches_per_epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        global_batch = self.batch_size * self.world_size
        step = self.start_batch
        epoch, perm = -1, []
        while True:
            e, b = divmod(step, self.batches_per_epoch)
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            first = b * global_batch + self.rank * self.batch_size
            for p in range(first, first + self.batch_size):
                yield e, perm[p]
            step += 1


class EpochBasedTrainLoop(IterBasedTrainLoop):
    """Train for `max_epochs` epochs; `val_interval` and `val_begin` count epochs (as MMEngine).

    An epoch is `len(dataset) // (batch_size x processes x accumulative_counts)` optimizer steps
    over that epoch's permutation of the dataset (the remainder is dropped, as `drop_last`), so
    one iteration is still one optimizer step and every process has a full batch. With this loop
    `default_hooks.checkpoint.interval` counts epochs too (MMEngine's `by_epoch` checkpoints);
    `default_hooks.logger.interval` and `param_scheduler` `begin`/`end` count iterations.
    """

    def __init__(
        self,
        context: LoopContext,
        max_epochs: int,
        val_interval: int = 1,
        val_begin: int = 1,
        max_iters: None = None,
    ) -> None:
        if max_iters is not None:
            raise ValueError(
                "train_cfg: EpochBasedTrainLoop counts max_epochs, not max_iters (a max_iters merged from a "
                "base schedule is removed by setting it to null: train_cfg.max_iters=null)"
            )
        if max_epochs <= 0:
            raise ValueError(f"train_cfg.max_epochs must be positive, got {max_epochs}")
        dataset = context.train_dataset
        try:
            n = len(dataset)
        except TypeError:
            raise ValueError(
                "EpochBasedTrainLoop needs a training dataset with a length (a streamed dataset has none: "
                "use IterBasedTrainLoop with max_iters)"
            ) from None
        batch, processes, accum = (
            context.train_batch_size,
            context.accelerator.num_processes,
            context.accumulative_counts,
        )
        per_step = batch * processes * accum
        if n < per_step:
            raise ValueError(
                f"EpochBasedTrainLoop: the training set has {n} samples, fewer than one optimizer step needs "
                f"({batch} per process x {processes} processes x {accum} accumulation = {per_step})"
            )
        self.iters_per_epoch = n // per_step
        self.max_epochs = int(max_epochs)
        super().__init__(context, self.max_epochs * self.iters_per_epoch, val_interval, val_begin)

    @property
    def epoch(self) -> int:
        """Completed epochs."""
        return self.iter // self.iters_per_epoch

    def should_validate(self, iteration: int) -> bool:
        if iteration == self.max_iters:
            return True
        if iteration % self.iters_per_epoch:
            return False
        epoch = iteration // self.iters_per_epoch
        return self.val_interval > 0 and epoch >= self.val_begin and epoch % self.val_interval == 0

    def should_checkpoint(self, iteration: int, interval: int) -> bool:
        return interval > 0 and iteration % (interval * self.iters_per_epoch) == 0

    def build_sampler(
        self,
        dataset_size: int,
        batch_size: int,
        seed: int,
        shuffle: bool,
        rank: int,
        world_size: int,
        start_batch: int,
    ) -> EpochSampler:
        return EpochSampler(
            dataset_size,
            batch_size,
            self.iters_per_epoch * self.context.accumulative_counts,
            seed=seed,
            shuffle=shuffle,
            rank=rank,
            world_size=world_size,
            start_batch=start_batch,
        )
