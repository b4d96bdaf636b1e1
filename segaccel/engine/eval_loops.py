"""`ValLoop` and `TestLoop`: predict a split and compute the evaluator's metrics (as in MMEngine).

Like the train loops they run on a `LoopContext` (see `segaccel.engine.loop_context`), never on the
Runner. Bad samples (`skip_bad_samples: true` in a dataset config) are dropped from their batches
(none is evaluated twice); how many were skipped and how many the metrics cover is logged once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from segaccel.data.collate import DROPPED_KEY, SKIPPED_KEY
from segaccel.engine.fault_injection import kill_point
from segaccel.engine.logging import logger, progress_bar
from segaccel.engine.loop_context import LoopContext


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

    def __init__(self, context: LoopContext, dataloader: torch.utils.data.DataLoader, evaluator: Any) -> None:
        self.context = context
        self.dataloader = dataloader
        self.evaluator = evaluator
        self.bad_samples_skipped = 0
        self.samples_evaluated: int | None = None

    @torch.no_grad()
    def run(self, iteration: int | None = None) -> dict[str, float]:
        with torch.random.fork_rng(devices=[]):
            return self._run(iteration)

    def _run(self, iteration: int | None = None) -> dict[str, float]:
        ctx = self.context
        acc = ctx.accelerator
        model = ctx.unwrapped_model
        model.eval()
        sync_buffers(model, acc)
        self.evaluator.reset()
        keep = ctx.vis_num_samples if acc.is_main_process and self._visualize(iteration) else 0
        kept: list[Any] = []
        skipped = evaluated = 0
        for batch in progress_bar(self.dataloader, desc=self.mode, is_main=acc.is_main_process, leave=False):
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
                kill_point("validation", iteration)  # a fault-test kill point (no-op otherwise)
            if len(kept) < keep:
                kept.extend(o.cpu() for o in outputs[: keep - len(kept)])
        self._report_skipped(skipped, evaluated)
        if acc.num_processes > 1:
            self.evaluator.all_reduce_(lambda t: acc.reduce(t, reduction="sum"), device=acc.device)
        metrics = self.evaluator.compute()
        if acc.is_main_process:
            logger.info(f"per-class results ({self.mode}):\n" + self.evaluator.results_table())
            if ctx.scalar_logger is not None:
                total = max(ctx.max_iters, iteration or 0, 1)
                ctx.scalar_logger.log(self.mode, iteration or 0, metrics, total=total)
            if kept and iteration is not None:
                ctx.hooks.write_overlays(kept, iteration)
        metrics = {k: (float(v) if not math.isnan(v) else v) for k, v in metrics.items()}
        return metrics

    def _visualize(self, iteration: int | None) -> bool:
        """Overlays after iterations that are multiples of `visualization.interval` and after the last.

        `interval: 0` turns them off; evaluation outside training (`iteration` None) writes none.
        """
        interval = self.context.vis_interval
        if iteration is None or interval <= 0:
            return False
        last = self.context.max_iters > 0 and iteration == self.context.max_iters
        return last or iteration % interval == 0

    def _report_skipped(self, skipped: int, evaluated: int) -> None:
        """Sum the bad samples skipped and the samples evaluated over processes; log once if any skipped."""
        self.bad_samples_skipped, self.samples_evaluated = skipped, evaluated
        dataset = getattr(self.dataloader, "dataset", None)
        if not getattr(dataset, "skip_bad_samples", False):
            return  # nothing can have been skipped (the same on every process: no collective needed)
        acc = self.context.accelerator
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
        context: LoopContext,
        dataloader: torch.utils.data.DataLoader,
        evaluator: Any,
        writers: list[Any] | tuple[Any, ...] = (),
    ) -> None:
        super().__init__(context, dataloader, evaluator)
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
