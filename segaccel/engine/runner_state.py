"""`RunnerStateHooks`: the loops' hooks that keep the training state (part of `Runner`).

Checkpoints (`engine.checkpoint`: `accelerator.save_state`, written atomically), resuming, the best
model by `default_hooks.checkpoint.save_best`, stop requests (collective across processes) and the
last good state after a NaN/inf loss. `Runner` inherits these; they read the Runner's attributes
(`accelerator`, `cfg`, `work_dir`, `train_loop`, `signals`, `best`, ...), set in `Runner.__init__`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segaccel.config import to_plain
from segaccel.engine.checkpoint import config_digest, restore_checkpoint, resume_path, save_checkpoint
from segaccel.engine.fault_injection import kill_point
from segaccel.engine.logging import logger
from segaccel.engine.loop_context import NonFiniteLossError


class RunnerStateHooks:
    """Checkpoint, best-model and stop hooks of the `Runner` (see the module docstring)."""

    best: dict[str, Any]

    def _resume_path(self) -> Path | None:
        """The checkpoint `resume` names (the latest complete one for `True`), or None."""
        return resume_path(self.resume, self.work_dir / "checkpoints")

    def _load_checkpoint(self, path: Path) -> int:
        """Restore everything `save_state` wrote; returns the iteration to continue from."""
        state = restore_checkpoint(
            self.accelerator, path, self.cfg, custom_objects=self._checkpointed, model=self.model
        )
        self.best = state.get("best", {})
        self._resumed_from = path
        return int(state["iteration"])

    def save_checkpoint(self, iteration: int, name: str | None = None) -> Path:
        """Save the training state as `checkpoints/iter_<iteration>` (or `name`); all processes call it."""
        if name is None and self._last_saved is not None and self._last_saved[0] == iteration:
            if self._last_saved[1].is_dir():
                return self._last_saved[1]
        state = {
            "best": self.best,
            "config_digest": config_digest(self.cfg),
            "config": to_plain(self.cfg),
            "num_processes": self.accelerator.num_processes,
        }
        path = save_checkpoint(
            self.accelerator,
            self.work_dir / "checkpoints",
            iteration,
            state,
            max_keep=self.max_keep_ckpts,
            name=name,
            custom_objects=self._checkpointed,
        )
        if name is None:
            self._last_saved = (iteration, path)
        if self.accelerator.is_main_process:
            logger.info(f"saved checkpoint {path}")
        return path

    def after_train_iter(self, iteration: int, metrics: dict[str, float] | None) -> None:
        """Checkpoint at the interval and at the end; keep the best model by `save_best`."""
        kill_point("after_step", iteration)
        if metrics and self.save_best:
            self._update_best(iteration, metrics)
        last = iteration == self.train_loop.max_iters
        if last or self.train_loop.should_checkpoint(iteration, self.ckpt_interval):
            self.save_checkpoint(iteration)

    def _update_best(self, iteration: int, metrics: dict[str, float]) -> None:
        """A new best `save_best` metric: checkpoint `checkpoints/best_<metric>` and `best_model/`."""
        key = self.save_best if self.save_best != "auto" else "mIoU"
        value = metrics.get(key)
        if value is None or (isinstance(value, float) and value != value):  # NaN
            return
        if self.best.get("value") is None or value > self.best["value"]:
            self.best = {"metric": key, "value": value, "iteration": iteration}
            self.save_checkpoint(iteration, name=f"best_{key}")
            self.export_model(self.work_dir / "best_model", metrics)
            if self.accelerator.is_main_process:
                logger.info(f"new best {key} = {value:.2f} at iteration {iteration}")

    def request_stop(self) -> None:
        """Stop training after the current iteration, with a checkpoint (as SIGTERM does)."""
        self._stop_requested = True

    def stop_requested(self) -> bool:
        """Has any process been asked to stop? (Collective with several processes: all call it.)"""
        flag = self._stop_requested or self.signals.signum is not None
        acc = self.accelerator
        if acc.num_processes > 1:
            t = acc.reduce(torch.tensor([float(flag)], device=acc.device), reduction="sum")
            flag = bool(t.item() > 0)
        return flag

    def on_nonfinite(self, err: NonFiniteLossError, completed: int) -> NonFiniteLossError:
        """Save the last good state (after iteration `completed`); the error to raise.

        The failing step has not touched the weights, optimizer or schedule (it never steps), and
        the loop has put back the RNG states of the start of the failing iteration, so the saved
        checkpoint is exactly the state after the last good iteration: resuming from it replays the
        failing iteration.
        """
        path = self.save_checkpoint(completed)
        msg = (
            f"{err}. Training stopped; the last good state (after iteration {completed}) is saved to {path}. "
            "Lower the learning rate or set optim_wrapper.clip_grad, then resume from it with "
            f"--resume {path}; or set optim_wrapper.skip_nonfinite=true to skip such steps."
        )
        if self.accelerator.is_main_process:
            logger.error(msg)
        return NonFiniteLossError(msg, err.iteration, err.terms)
