"""One training iteration: one optimizer step over `accumulative_counts` micro-batches.

Non-finite losses and gradients: the check is made on every process and agreed on by all, so
processes never disagree on whether a step happens. By default the step raises
`NonFiniteLossError` (the loop has the Runner save the last good state); with
`optim_wrapper.skip_nonfinite: true` the step is skipped with a warning and reported
(`IterOutput.skipped_nonfinite`). Steps skipped by the fp16 grad scaler are reported as
`skipped_overflow`.
"""

from __future__ import annotations

import contextlib
import random
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from segaccel.data.collate import SKIPPED_KEY
from segaccel.engine.logging import logger
from segaccel.engine.loop_context import LoopContext, NonFiniteLossError


@dataclass
class IterOutput:
    """What one optimizer step reports to the loop."""

    log_vars: dict[str, torch.Tensor] = field(default_factory=dict)
    data_time: float = 0.0
    grad_norm: torch.Tensor | None = None
    skipped_nonfinite: bool = False
    skipped_overflow: bool = False
    bad_samples_skipped: int = 0  # bad rows skipped for this step's micro-batches (this process)


def parse_losses(losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum the entries whose key contains `loss`; return it and every entry (detached) for logging."""
    log_vars = {k: v.detach().float().mean() for k, v in losses.items()}
    loss_terms = [v.mean() for k, v in losses.items() if "loss" in k]
    if not loss_terms:
        raise ValueError(f"the model returned no loss term (keys containing 'loss'): {sorted(losses)}")
    loss = sum(loss_terms)
    log_vars["loss"] = loss.detach().float()
    return loss, log_vars


def optimizer_step(ctx: LoopContext, data_iter: Iterator[dict[str, Any]], completed: int) -> IterOutput:
    """Read `ctx.accumulative_counts` micro-batches, backward each, then step (or skip) once.

    `completed` is the number of optimizer steps already taken (the failing iteration is
    `completed + 1` in messages). The LR scheduler steps once, also for a skipped step.
    """
    acc = ctx.accelerator
    model = ctx.model
    accum = ctx.accumulative_counts
    out = IterOutput()
    bad_terms: dict[str, float] = {}
    set_progress = getattr(ctx.unwrapped_model, "set_train_progress", None)
    if set_progress is not None:  # parts that follow training progress (EoMT's mask annealing)
        set_progress(completed, ctx.max_iters)
    for micro in range(accum):
        t0 = time.perf_counter()
        batch = next(data_iter)
        out.data_time += time.perf_counter() - t0
        out.bad_samples_skipped += int(batch.pop(SKIPPED_KEY, 0))
        data = ctx.unwrapped_model.data_preprocessor(batch, training=True)
        sync = micro == accum - 1
        no_sync = contextlib.nullcontext() if sync or acc.num_processes == 1 else acc.no_sync(model)
        with no_sync:
            losses = model(data["inputs"], data["data_samples"], mode="loss")
            loss, log_vars = parse_losses(losses)
            bad = nonfinite_terms(log_vars, acc)
            if bad:
                if not ctx.skip_nonfinite:
                    raise NonFiniteLossError(_describe(bad, "loss", completed), completed + 1, sorted(bad))
                bad_terms.update(bad)
            # Always backward, also for a skipped step: every process takes part in the gradient
            # all-reduce, and the gradients are dropped below.
            acc.backward(loss / accum)
        for k, v in log_vars.items():
            out.log_vars[k] = out.log_vars.get(k, 0.0) + v / accum
    scaler = acc.scaler
    if ctx.clip_grad is not None and not bad_terms:
        grad_norm = acc.clip_grad_norm_(model.parameters(), **ctx.clip_grad)
        out.grad_norm = grad_norm.detach().float() if isinstance(grad_norm, torch.Tensor) else grad_norm
    elif scaler is None and not bad_terms:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads) if grads else None
    else:
        grad_norm = None
    # With a grad scaler, overflowing gradients are expected and the scaler skips the step.
    if scaler is None and grad_norm is not None and not torch.isfinite(grad_norm):
        bad = {"grad_norm": float(grad_norm)}
        if not ctx.skip_nonfinite:
            raise NonFiniteLossError(
                _describe(bad, "gradient", completed) + f" (first parameters: {_nonfinite_params(ctx)})",
                completed + 1,
                ["grad_norm"],
            )
        bad_terms.update(bad)
    if bad_terms:
        if acc.is_main_process:
            what = _describe(bad_terms, "loss or gradient", completed)
            logger.warning(f"{what}: step skipped (skip_nonfinite)")
        out.skipped_nonfinite = True
    else:
        ctx.optimizer.step()
        out.skipped_overflow = scaler is not None and acc.optimizer_step_was_skipped
    ctx.lr_scheduler.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    return out


def nonfinite_terms(log_vars: dict[str, torch.Tensor], accelerator: Any) -> dict[str, float]:
    """Loss terms that are NaN or infinite on any process (`{name: value}`, agreed by all)."""
    names = [k for k in log_vars if "loss" in k and k != "loss"] or ["loss"]
    values = torch.stack([log_vars[k] for k in names])
    flags = (~torch.isfinite(values)).float()
    if accelerator.num_processes > 1:
        flags = accelerator.reduce(flags.to(accelerator.device), reduction="sum")
    if not bool(flags.any()):
        return {}
    return {k: float(values[i]) for i, k in enumerate(names) if flags[i] > 0}


def _describe(bad: dict[str, float], what: str, completed: int) -> str:
    terms = ", ".join(f"{k}={v}" for k, v in bad.items())
    return f"non-finite {what} at iteration {completed + 1}: {terms}"


def _nonfinite_params(ctx: LoopContext, limit: int = 3) -> str:
    names = [
        n
        for n, p in ctx.unwrapped_model.named_parameters()
        if p.grad is not None and not torch.isfinite(p.grad).all()
    ]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


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
