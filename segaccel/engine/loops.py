"""The loops: `IterBasedTrainLoop`, `ValLoop` and `TestLoop`, as in MMEngine.

One train iteration is one optimizer step (`accumulative_counts` micro-batches). Validation runs
every `val_interval` iterations from `val_begin` on, and after the last iteration.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from segaccel.engine.logging import logger

if TYPE_CHECKING:
    from segaccel.engine.runner import Runner


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def parse_losses(losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum the entries whose key contains `loss`; return it and every entry (detached) for logging."""
    log_vars = {k: v.detach().float().mean() for k, v in losses.items()}
    loss_terms = [v.mean() for k, v in losses.items() if "loss" in k]
    if not loss_terms:
        raise ValueError(f"the model returned no loss term (keys containing 'loss'): {sorted(losses)}")
    loss = sum(loss_terms)
    log_vars["loss"] = loss.detach().float()
    return loss, log_vars


class IterBasedTrainLoop:
    """Train for `max_iters` optimizer steps, validating every `val_interval` from `val_begin`."""

    def __init__(self, runner: Runner, max_iters: int, val_interval: int = 1000, val_begin: int = 1) -> None:
        if max_iters <= 0:
            raise ValueError(f"train_cfg.max_iters must be positive, got {max_iters}")
        self.runner = runner
        self.max_iters = int(max_iters)
        self.val_interval = int(val_interval)
        self.val_begin = int(val_begin)
        self.iter = 0

    def should_validate(self, iteration: int) -> bool:
        """Validate after step `iteration` (1-based)?"""
        if iteration == self.max_iters:
            return True
        return self.val_interval > 0 and iteration >= self.val_begin and iteration % self.val_interval == 0

    def run(self, data_iter: Iterator[dict[str, Any]]) -> dict[str, float]:
        r = self.runner
        acc = r.accelerator
        model = r.model
        model.train()
        log_interval = r.log_interval
        sums: dict[str, torch.Tensor] = {}
        count = 0
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
        while self.iter < self.max_iters:
            t0 = time.perf_counter()
            log_vars, t_data, grad_norm = self.run_iter(data_iter)
            self.iter += 1
            step_time += time.perf_counter() - t0
            data_time += t_data
            for k, v in log_vars.items():
                sums[k] = sums.get(k, 0.0) + v
            if grad_norm is not None:
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
            count += 1
            bar.update(1)
            if self.iter % log_interval == 0 or self.iter == self.max_iters:
                scalars = self._reduce_for_log(sums, count)
                scalars = {"lr": r.lr_scheduler.get_last_lr()[0], **scalars}
                scalars["time"] = step_time / count
                scalars["data_time"] = data_time / count
                if torch.cuda.is_available():
                    scalars["memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
                r.scalar_logger.log("train", self.iter, scalars)
                bar.set_postfix(loss=f"{scalars.get('loss', float('nan')):.4f}")
                sums, count, step_time, data_time = {}, 0, 0.0, 0.0
            metrics = None
            if self.should_validate(self.iter) and r.val_loop is not None:
                metrics = last_metrics = r.val_loop.run(iteration=self.iter)
                model.train()
            r.after_train_iter(self.iter, metrics)
        bar.close()
        return last_metrics

    def run_iter(self, data_iter: Iterator[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], float, Any]:
        """One optimizer step over `accumulative_counts` micro-batches."""
        r = self.runner
        acc = r.accelerator
        model = r.model
        accum = r.accumulative_counts
        totals: dict[str, torch.Tensor] = {}
        data_time = 0.0
        for micro in range(accum):
            t0 = time.perf_counter()
            batch = next(data_iter)
            data_time += time.perf_counter() - t0
            data = r.unwrapped_model.data_preprocessor(batch, training=True)
            sync = micro == accum - 1
            ctx = contextlib.nullcontext() if sync or acc.num_processes == 1 else acc.no_sync(model)
            with ctx:
                losses = model(data["inputs"], data["data_samples"], mode="loss")
                loss, log_vars = parse_losses(losses)
                self._check_finite(loss, log_vars)
                acc.backward(loss / accum)
            for k, v in log_vars.items():
                totals[k] = totals.get(k, 0.0) + v / accum
        grad_norm = None
        if r.clip_grad is not None:
            grad_norm = acc.clip_grad_norm_(model.parameters(), **r.clip_grad)
            grad_norm = grad_norm.detach().float() if isinstance(grad_norm, torch.Tensor) else grad_norm
        r.optimizer.step()
        r.lr_scheduler.step()
        r.optimizer.zero_grad(set_to_none=True)
        return totals, data_time, grad_norm

    def _check_finite(self, loss: torch.Tensor, log_vars: dict[str, torch.Tensor]) -> None:
        if torch.isfinite(loss):
            return
        bad = [k for k, v in log_vars.items() if k != "loss" and not torch.isfinite(v)]
        raise NonFiniteLossError(
            f"non-finite loss at iteration {self.iter + 1}: "
            + ", ".join(f"{k}={log_vars[k].item()}" for k in bad or ["loss"])
        )

    def _reduce_for_log(self, sums: dict[str, Any], count: int) -> dict[str, float]:
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


class ValLoop:
    """Predict every sample of the validation split and compute the evaluator's metrics.

    Each process predicts its own shard (no padding duplicates); the metric's per-class sums are
    reduced once across processes, so the result equals a single-process run.
    """

    mode = "val"

    def __init__(self, runner: Runner, dataloader: torch.utils.data.DataLoader, evaluator: Any) -> None:
        self.runner = runner
        self.dataloader = dataloader
        self.evaluator = evaluator

    @torch.no_grad()
    def run(self, iteration: int | None = None) -> dict[str, float]:
        r = self.runner
        acc = r.accelerator
        model = r.unwrapped_model
        model.eval()
        self.evaluator.reset()
        keep = r.vis_num_samples if acc.is_main_process else 0
        kept: list[Any] = []
        for batch in tqdm(
            self.dataloader, desc=self.mode, disable=not acc.is_main_process, leave=False, dynamic_ncols=True
        ):
            data = model.data_preprocessor(batch, training=False)
            with acc.autocast():
                outputs = model.predict(data["inputs"], data["data_samples"])
            self.evaluator.process(outputs)
            if len(kept) < keep:
                kept.extend(o.cpu() for o in outputs[: keep - len(kept)])
        if acc.num_processes > 1:
            self.evaluator.all_reduce_(lambda t: acc.reduce(t, reduction="sum"), device=acc.device)
        metrics = self.evaluator.compute()
        if acc.is_main_process:
            logger.info(f"per-class results ({self.mode}):\n" + self.evaluator.results_table())
            total = r.train_loop.max_iters if r.train_loop is not None else 0
            r.scalar_logger.log(self.mode, iteration or 0, metrics, total=max(total, iteration or 0, 1))
            if kept and iteration is not None:
                r.write_overlays(kept, iteration)
        metrics = {k: (float(v) if not math.isnan(v) else v) for k, v in metrics.items()}
        return metrics


class TestLoop(ValLoop):
    """`ValLoop` over the test split."""

    mode = "test"
