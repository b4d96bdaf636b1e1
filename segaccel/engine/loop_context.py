"""What the loops get: a `LoopContext` (the parts and settings they run with) and `LoopHooks`.

The Runner builds; the loops run. A loop never sees the Runner: it reads the accelerator, the
(prepared) model, optimizer and LR scheduler and its settings from a `LoopContext`, and calls back
through the narrow `LoopHooks` interface, which the Runner implements (checkpoints, the best model,
stop requests, overlays). `NoHooks` runs a loop without a Runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from segaccel.config import get_path
from segaccel.engine.logging import ScalarLogger
from segaccel.registry import ConfigError


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


class LoopHooks(Protocol):
    """What a loop calls back (the Runner implements it)."""

    def after_train_iter(self, iteration: int, metrics: dict[str, float] | None) -> None:
        """After optimizer step `iteration` (1-based) and its validation (`metrics`, else None)."""

    def on_nonfinite(self, err: NonFiniteLossError, completed: int) -> Exception:
        """A step failed with a non-finite loss after `completed` good steps: the error to raise."""

    def on_stop(self, iteration: int) -> Exception:
        """A stop was requested after step `iteration`: the error to raise."""

    def stop_requested(self) -> bool:
        """Should training stop after this step? (Collective: every process calls it.)"""

    def write_overlays(self, samples: list[Any], iteration: int) -> None:
        """Show a few predicted validation samples of iteration `iteration` (main process)."""


class Validates(Protocol):
    """A validation loop as the train loop runs it."""

    def run(self, iteration: int | None = None) -> dict[str, float]: ...


class NoHooks:
    """Hooks that do nothing: a loop run on its own (no checkpoints, no overlays, never stopped)."""

    def after_train_iter(self, iteration: int, metrics: dict[str, float] | None) -> None:
        pass

    def on_nonfinite(self, err: NonFiniteLossError, completed: int) -> Exception:
        return err

    def on_stop(self, iteration: int) -> Exception:
        return TrainingInterrupted(f"training stopped at iteration {iteration}", iteration, None)

    def stop_requested(self) -> bool:
        return False

    def write_overlays(self, samples: list[Any], iteration: int) -> None:
        pass


@dataclass
class LoopContext:
    """The parts and settings the loops run with.

    The Runner creates it with the settings (`loop_settings`), then fills in the model, optimizer,
    scheduler and validation loop as it builds them (the model as Accelerate prepared it).

    Attributes:
        accelerator: the run's `accelerate.Accelerator`.
        hooks: the Runner's callbacks (`LoopHooks`).
        model, optimizer, lr_scheduler: as prepared by Accelerate; the scheduler steps once per
            optimizer step.
        scalar_logger: interval logging (terminal, `scalars.jsonl`, trackers); None logs nothing.
        val_loop: run by the train loop when it validates.
        train_dataset: the training dataset (its length sizes epochs; `skip_bad_samples` adds a
            counter to the log).
        max_iters: the training length in optimizer steps (0 outside training).
        log_interval: `default_hooks.logger.interval`, in iterations.
        accumulative_counts: micro-batches per optimizer step.
        clip_grad: `{max_norm, norm_type}` or None.
        skip_nonfinite: skip (and count) non-finite steps instead of stopping.
        vis_num_samples, vis_interval: validation overlays (`default_hooks.visualization`).
        train_batch_size: the training batch size per process.
    """

    accelerator: Any
    hooks: LoopHooks = field(default_factory=NoHooks)
    model: nn.Module | None = None
    optimizer: Any = None
    lr_scheduler: Any = None
    scalar_logger: ScalarLogger | None = None
    val_loop: Validates | None = None
    train_dataset: Any = None
    max_iters: int = 0
    log_interval: int = 50
    accumulative_counts: int = 1
    clip_grad: dict[str, float] | None = None
    skip_nonfinite: bool = False
    vis_num_samples: int = 4
    vis_interval: int = 1
    train_batch_size: int = 2

    @property
    def unwrapped_model(self) -> nn.Module:
        """The model without Accelerate's wrappers (DDP, compile)."""
        return self.accelerator.unwrap_model(self.model)


def loop_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The `LoopContext` settings of a resolved config (`default_hooks`, `optim_wrapper`, batch size)."""
    hooks = cfg.get("default_hooks") or {}
    optim_cfg = cfg.get("optim_wrapper") or {}
    accumulative_counts = int(optim_cfg.get("accumulative_counts", 1))
    if accumulative_counts < 1:
        raise ConfigError(f"optim_wrapper.accumulative_counts must be >= 1, got {accumulative_counts}")
    clip_grad = check_clip_grad(optim_cfg.get("clip_grad") or None)
    if "skip_nonfinite" in cfg:
        raise ConfigError("skip_nonfinite belongs under optim_wrapper: optim_wrapper.skip_nonfinite=true")
    return {
        "log_interval": int(get_path(hooks, "logger.interval", 50)),
        "accumulative_counts": accumulative_counts,
        "clip_grad": clip_grad,
        "skip_nonfinite": bool(optim_cfg.get("skip_nonfinite", False)),
        "vis_num_samples": int(get_path(hooks, "visualization.num_samples", 4) or 0),
        "vis_interval": int(get_path(hooks, "visualization.interval", 1) or 0),
        "train_batch_size": int(get_path(cfg, "train_dataloader.batch_size", 2)),
    }


def check_clip_grad(clip_grad: dict[str, Any] | None) -> dict[str, Any] | None:
    """`optim_wrapper.clip_grad`: `{max_norm, norm_type=2}` (clipping by total norm) or None."""
    if clip_grad is None:
        return None
    if not isinstance(clip_grad, dict) or "max_norm" not in clip_grad:
        raise ConfigError(
            f"optim_wrapper.clip_grad: expected {{max_norm: ..., norm_type: 2}}, got {clip_grad!r}"
        )
    unknown = sorted(set(clip_grad) - {"max_norm", "norm_type"})
    if unknown:
        raise ConfigError(f"optim_wrapper.clip_grad: unknown keys {unknown} (known: max_norm, norm_type)")
    return {"max_norm": float(clip_grad["max_norm"]), "norm_type": float(clip_grad.get("norm_type", 2.0))}
