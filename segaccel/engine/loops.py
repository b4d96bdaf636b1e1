"""The loops: `IterBasedTrainLoop`, `EpochBasedTrainLoop`, `ValLoop` and `TestLoop`, as in MMEngine.

One train iteration is one optimizer step (`accumulative_counts` micro-batches); every interval and
schedule counts optimizer steps. `IterBasedTrainLoop` validates every `val_interval` iterations from
`val_begin` on, and after the last iteration. `EpochBasedTrainLoop` counts `max_epochs`,
`val_interval` and `val_begin` in epochs of `len(dataset) // (batch_size x processes x
accumulative_counts)` iterations each.

Non-finite losses and gradients: the check is made on every process and agreed on by all, so
processes never disagree on whether a step happens. By default the run stops (`NonFiniteLossError`)
after the runner saved the last good state; with `optim_wrapper.skip_nonfinite: true` the step is
skipped with a warning and counted in the log (`nonfinite_skipped`). Steps skipped by the fp16 grad
scaler are counted as `overflow_skipped`.

Bad samples (`skip_bad_samples: true` in a dataset config): the batches report how many bad rows
were skipped for them (`SKIPPED_KEY`, see segaccel/data/collate.py), whichever DataLoader worker read
them. Training logs `bad_samples_skipped` per log interval, summed over processes, and the run's
total at the end; evaluation drops bad samples (none is evaluated twice) and logs once how many were
skipped and how many the metrics cover.
"""

from __future__ import annotations

import contextlib
import math
import random
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from segaccel.data.collate import DROPPED_KEY, SKIPPED_KEY
from segaccel.data.samplers import InfiniteSampler
from segaccel.engine.checkpoint import checkpoint_stage
from segaccel.engine.logging import logger

if TYPE_CHECKING:
    from segaccel.engine.runner import Runner


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss (or gradient).

    `iteration` is the 1-based iteration that failed; `terms` the non-finite loss terms (or
    `["grad_norm"]`).
    """

    def __init__(self, message: str, iteration: int = 0, terms: list[str] | None = None) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.terms = list(terms or [])


class TrainingInterrupted(RuntimeError):
    """Training was stopped on request (SIGTERM, Ctrl-C, `Runner.request_stop`) after a checkpoint."""

    def __init__(self, message: str, iteration: int, checkpoint: Any, signum: int | None = None) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.checkpoint = checkpoint
        self.signum = signum


def parse_losses(losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum the entries whose key contains `loss`; return it and every entry (detached) for logging."""
    log_vars = {k: v.detach().float().mean() for k, v in losses.items()}
    loss_terms = [v.mean() for k, v in losses.items() if "loss" in k]
    if not loss_terms:
        raise ValueError(f"the model returned no loss term (keys containing 'loss'): {sorted(losses)}")
    loss = sum(loss_terms)
    log_vars["loss"] = loss.detach().float()
    return loss, log_vars


def capture_rng_state() -> dict[str, Any]:
    """Every RNG state `accelerator.save_state` records (Python, NumPy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def memory_mb(device: torch.device) -> float:
    """Memory in MiB: on CUDA the peak allocated since the last call; else the process's peak RSS."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
        return peak
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


@dataclass
class IterOutput:
    """What one optimizer step reports to the loop."""

    log_vars: dict[str, torch.Tensor] = field(default_factory=dict)
    data_time: float = 0.0
    grad_norm: torch.Tensor | None = None
    skipped_nonfinite: bool = False
    skipped_overflow: bool = False
    bad_samples_skipped: int = 0  # bad rows skipped for this step's micro-batches (this process)


class IterBasedTrainLoop:
    """Train for `max_iters` optimizer steps, validating every `val_interval` from `val_begin`."""

    def __init__(
        self,
        runner: Runner,
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
        self.runner = runner
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
        r = self.runner
        acc = r.accelerator
        model = r.model
        model.train()
        log_interval = r.log_interval
        sums: dict[str, torch.Tensor] = {}
        counters = dict.fromkeys(self._counter_keys(), 0)
        count = window = 0
        step_time = data_time = 0.0
        last_metrics: dict[str, float] = {}
        r.scalar_logger.start(self.iter)
        bar = tqdm(
            total=self.max_iters,
            initial=self.iter,
            desc="train",
            disable=not acc.is_main_process,
            dynamic_ncols=True,
            leave=False,
        )
        try:
            while self.iter < self.max_iters:
                rng_state = capture_rng_state()
                t0 = time.perf_counter()
                try:
                    out = self.run_iter(data_iter)
                except NonFiniteLossError as err:
                    r.optimizer.zero_grad(set_to_none=True)
                    restore_rng_state(rng_state)
                    raise r.on_nonfinite(err, self.iter) from None
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
                    scalars = {"lr": r.lr_scheduler.get_last_lr()[0]}
                    scalars.update(self._reduce_for_log(sums, count))
                    scalars.update(self._reduce_counters(counters))
                    scalars["time"] = step_time / window
                    scalars["data_time"] = data_time / window
                    scalars["memory"] = memory_mb(acc.device)
                    r.scalar_logger.log("train", self.iter, scalars)
                    bar.set_postfix(loss=f"{scalars.get('loss', float('nan')):.4f}")
                    sums, count, window, step_time, data_time = {}, 0, 0, 0.0, 0.0
                    counters = dict.fromkeys(counters, 0)
                metrics = None
                if self.should_validate(self.iter) and r.val_loop is not None:
                    metrics = last_metrics = r.val_loop.run(iteration=self.iter)
                    model.train()
                r.after_train_iter(self.iter, metrics)
                if self.iter < self.max_iters and r.stop_requested():
                    raise r.on_stop(self.iter)
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
        return bool(getattr(getattr(self.runner, "train_dataset", None), "skip_bad_samples", False))

    def _counter_keys(self) -> list[str]:
        keys = []
        if self.runner.skip_nonfinite:
            keys.append("nonfinite_skipped")
        if self.runner.accelerator.scaler is not None:
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
            acc = self.runner.accelerator
            count = int(out["bad_samples_skipped"])
            if acc.num_processes > 1:
                total = torch.tensor([count], dtype=torch.int64, device=acc.device)
                count = int(acc.reduce(total, reduction="sum").item())
            out["bad_samples_skipped"] = count
            self.bad_samples_skipped += count
        return out

    def run_iter(self, data_iter: Iterator[dict[str, Any]]) -> IterOutput:
        """One optimizer step over `accumulative_counts` micro-batches."""
        r = self.runner
        acc = r.accelerator
        model = r.model
        accum = r.accumulative_counts
        out = IterOutput()
        bad_terms: dict[str, float] = {}
        for micro in range(accum):
            t0 = time.perf_counter()
            batch = next(data_iter)
            out.data_time += time.perf_counter() - t0
            out.bad_samples_skipped += int(batch.pop(SKIPPED_KEY, 0))
            data = r.unwrapped_model.data_preprocessor(batch, training=True)
            sync = micro == accum - 1
            ctx = contextlib.nullcontext() if sync or acc.num_processes == 1 else acc.no_sync(model)
            with ctx:
                losses = model(data["inputs"], data["data_samples"], mode="loss")
                loss, log_vars = parse_losses(losses)
                bad = self._nonfinite_terms(log_vars)
                if bad:
                    if not r.skip_nonfinite:
                        raise NonFiniteLossError(self._describe(bad, "loss"), self.iter + 1, sorted(bad))
                    bad_terms.update(bad)
                # Always backward, also for a skipped step: every process takes part in the gradient
                # all-reduce, and the gradients are dropped below.
                acc.backward(loss / accum)
            for k, v in log_vars.items():
                out.log_vars[k] = out.log_vars.get(k, 0.0) + v / accum
        scaler = acc.scaler
        if r.clip_grad is not None and not bad_terms:
            grad_norm = acc.clip_grad_norm_(model.parameters(), **r.clip_grad)
            out.grad_norm = grad_norm.detach().float() if isinstance(grad_norm, torch.Tensor) else grad_norm
        elif scaler is None and not bad_terms:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            grad_norm = torch.nn.utils.get_total_norm(grads) if grads else None
        else:
            grad_norm = None
        # With a grad scaler, overflowing gradients are expected and the scaler skips the step.
        if scaler is None and grad_norm is not None and not torch.isfinite(grad_norm):
            bad = {"grad_norm": float(grad_norm)}
            if not r.skip_nonfinite:
                raise NonFiniteLossError(
                    self._describe(bad, "gradient") + f" (first parameters: {self._nonfinite_params()})",
                    self.iter + 1,
                    ["grad_norm"],
                )
            bad_terms.update(bad)
        if bad_terms:
            if acc.is_main_process:
                what = self._describe(bad_terms, "loss or gradient")
                logger.warning(f"{what}: step skipped (skip_nonfinite)")
            out.skipped_nonfinite = True
        else:
            r.optimizer.step()
            out.skipped_overflow = scaler is not None and acc.optimizer_step_was_skipped
        r.lr_scheduler.step()
        r.optimizer.zero_grad(set_to_none=True)
        return out

    def _nonfinite_terms(self, log_vars: dict[str, torch.Tensor]) -> dict[str, float]:
        """Loss terms that are NaN or infinite on any process (`{name: value}`, agreed by all)."""
        names = [k for k in log_vars if "loss" in k and k != "loss"] or ["loss"]
        values = torch.stack([log_vars[k] for k in names])
        flags = (~torch.isfinite(values)).float()
        acc = self.runner.accelerator
        if acc.num_processes > 1:
            flags = acc.reduce(flags.to(acc.device), reduction="sum")
        if not bool(flags.any()):
            return {}
        return {k: float(values[i]) for i, k in enumerate(names) if flags[i] > 0}

    def _describe(self, bad: dict[str, float], what: str) -> str:
        terms = ", ".join(f"{k}={v}" for k, v in bad.items())
        return f"non-finite {what} at iteration {self.iter + 1}: {terms}"

    def _nonfinite_params(self, limit: int = 3) -> str:
        names = [
            n
            for n, p in self.runner.unwrapped_model.named_parameters()
            if p.grad is not None and not torch.isfinite(p.grad).all()
        ]
        return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")

    def _reduce_for_log(self, sums: dict[str, Any], count: int) -> dict[str, float]:
        if not sums or count == 0:
            return {}
        acc = self.runner.accelerator
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
        runner: Runner,
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
        dataset = getattr(runner, "train_dataset", None)
        try:
            n = len(dataset)
        except TypeError:
            raise ValueError(
                "EpochBasedTrainLoop needs a training dataset with a length (a streamed dataset has none: "
                "use IterBasedTrainLoop with max_iters)"
            ) from None
        per_step = runner.train_batch_size * runner.accelerator.num_processes * runner.accumulative_counts
        if n < per_step:
            raise ValueError(
                f"EpochBasedTrainLoop: the training set has {n} samples, fewer than one optimizer step needs "
                f"({runner.train_batch_size} per process x {runner.accelerator.num_processes} processes x "
                f"{runner.accumulative_counts} accumulation = {per_step})"
            )
        self.iters_per_epoch = n // per_step
        self.max_epochs = int(max_epochs)
        super().__init__(runner, self.max_epochs * self.iters_per_epoch, val_interval, val_begin)

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
            self.iters_per_epoch * self.runner.accumulative_counts,
            seed=seed,
            shuffle=shuffle,
            rank=rank,
            world_size=world_size,
            start_batch=start_batch,
        )


class ValLoop:
    """Predict every sample of the validation split and compute the evaluator's metrics.

    Each process predicts its own shard (no padding duplicates); the metric's per-class sums are
    reduced once across processes, so the result equals a single-process run. Before predicting,
    every process takes the main process's buffers (BatchNorm statistics drift apart per process
    without SyncBN), so all evaluate exactly the model that is saved. Validation never touches the
    training RNG streams (it runs in a forked RNG), so a run's training does not depend on when it
    validates.

    With `skip_bad_samples`, bad samples are dropped from their batches (a batch may be left with
    none); after each evaluation the numbers skipped and evaluated are summed over processes, logged
    once, and kept in `bad_samples_skipped` / `samples_evaluated` (without `skip_bad_samples` these
    are this process's figures).
    """

    mode = "val"

    def __init__(self, runner: Runner, dataloader: torch.utils.data.DataLoader, evaluator: Any) -> None:
        self.runner = runner
        self.dataloader = dataloader
        self.evaluator = evaluator
        self.bad_samples_skipped = 0
        self.samples_evaluated: int | None = None

    @torch.no_grad()
    def run(self, iteration: int | None = None) -> dict[str, float]:
        with torch.random.fork_rng(devices=[]):
            return self._run(iteration)

    def _run(self, iteration: int | None = None) -> dict[str, float]:
        r = self.runner
        acc = r.accelerator
        model = r.unwrapped_model
        model.eval()
        sync_buffers(model, acc)
        self.evaluator.reset()
        keep = r.vis_num_samples if acc.is_main_process and self._visualize(iteration) else 0
        kept: list[Any] = []
        skipped = evaluated = 0
        for batch in tqdm(
            self.dataloader, desc=self.mode, disable=not acc.is_main_process, leave=False, dynamic_ncols=True
        ):
            skipped += int(batch.pop(SKIPPED_KEY, 0))
            dropped = list(batch.pop(DROPPED_KEY, ()))
            outputs: list[Any] = []
            if batch["inputs"]:  # else every item was a bad sample, dropped
                data = model.data_preprocessor(batch, training=False)
                with acc.autocast():
                    outputs = model.predict(data["inputs"], data["data_samples"])
                self.evaluator.process(outputs)
            evaluated += len(outputs)
            self.after_batch(batch, outputs, dropped)
            if iteration is not None:
                checkpoint_stage("validation", iteration)  # a fault-test kill point (no-op otherwise)
            if len(kept) < keep:
                kept.extend(o.cpu() for o in outputs[: keep - len(kept)])
        self._report_skipped(skipped, evaluated)
        if acc.num_processes > 1:
            self.evaluator.all_reduce_(lambda t: acc.reduce(t, reduction="sum"), device=acc.device)
        metrics = self.evaluator.compute()
        if acc.is_main_process:
            logger.info(f"per-class results ({self.mode}):\n" + self.evaluator.results_table())
            total = r.train_loop.max_iters if r.train_loop is not None else 0
            r.scalar_logger.log(self.mode, iteration or 0, metrics, total=max(total, iteration or 0, 1))
            if kept and iteration is not None:
                r.write_overlays(kept, iteration)
                r.log_overlays_to_trackers(iteration)
        metrics = {k: (float(v) if not math.isnan(v) else v) for k, v in metrics.items()}
        return metrics

    def _visualize(self, iteration: int | None) -> bool:
        """Overlays after iterations that are multiples of `visualization.interval` and after the last.

        `interval: 0` turns them off; evaluation outside training (`iteration` None) writes none.
        """
        r = self.runner
        interval = getattr(r, "vis_interval", 1)
        if iteration is None or interval <= 0:
            return False
        last = r.train_loop is not None and iteration == r.train_loop.max_iters
        return last or iteration % interval == 0

    def _report_skipped(self, skipped: int, evaluated: int) -> None:
        """Sum the bad samples skipped and the samples evaluated over processes; log once if any skipped."""
        self.bad_samples_skipped, self.samples_evaluated = skipped, evaluated
        dataset = getattr(self.dataloader, "dataset", None)
        if not getattr(dataset, "skip_bad_samples", False):
            return  # nothing can have been skipped (the same on every process: no collective needed)
        acc = self.runner.accelerator
        if acc.num_processes > 1:
            counts = torch.tensor([skipped, evaluated], dtype=torch.int64, device=acc.device)
            skipped, evaluated = acc.reduce(counts, reduction="sum").tolist()
        self.bad_samples_skipped, self.samples_evaluated = int(skipped), int(evaluated)
        if skipped and acc.is_main_process:
            logger.warning(
                f"{self.mode}: {skipped} bad samples skipped; the metrics cover the {evaluated} others"
            )

    def after_batch(self, batch: dict[str, Any], outputs: list[Any], dropped: Sequence[int] = ()) -> None:
        """Called with every batch after the evaluator saw it (TestLoop writes outputs).

        `dropped`: positions in the loader's batch of bad samples that were dropped (`outputs` and
        `batch` hold the others, in order; both are empty when every item was dropped).
        """


def sync_buffers(model: torch.nn.Module, accelerator: Any) -> None:
    """Give every process the main process's buffers (BatchNorm running statistics)."""
    if accelerator.num_processes <= 1 or not torch.distributed.is_initialized():
        return
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer.data, src=0)


class TestLoop(ValLoop):
    """`ValLoop` over the test split; each `writer` gets every predicted batch.

    A writer has `process(batch, outputs, indices)`, where `indices` are the dataset indices of the
    batch's samples as this process's sampler gave them (None where the loader has no indexed
    sampler, e.g. a streamed dataset), without those of bad samples dropped by `skip_bad_samples`;
    a batch whose samples were all dropped reaches the writers as empty lists. Each process writes
    what it predicted (see `segaccel.engine.test_outputs`).
    """

    mode = "test"

    def __init__(
        self,
        runner: Runner,
        dataloader: torch.utils.data.DataLoader,
        evaluator: Any,
        writers: list[Any] | tuple[Any, ...] = (),
    ) -> None:
        super().__init__(runner, dataloader, evaluator)
        self.writers = list(writers)
        sampler = getattr(dataloader, "sampler", None)
        self._indices = list(sampler.indices) if hasattr(sampler, "indices") else None
        self._seen = 0

    def run(self, iteration: int | None = None) -> dict[str, float]:
        self._seen = 0
        return super().run(iteration)

    def after_batch(self, batch: dict[str, Any], outputs: list[Any], dropped: Sequence[int] = ()) -> None:
        n = len(outputs) + len(dropped)  # the items the sampler gave for this batch
        if self._indices is not None:
            gone = set(dropped)
            taken = self._indices[self._seen : self._seen + n]
            indices = [index for position, index in enumerate(taken) if position not in gone]
        else:
            indices = [None] * len(outputs)
        self._seen += n
        for writer in self.writers:
            writer.process(batch, outputs, indices)
