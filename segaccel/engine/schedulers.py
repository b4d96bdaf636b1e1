"""Learning-rate schedules by iteration, with MMEngine's names and semantics.

A config's `param_scheduler` is a list; each entry is active on `[begin, end)` optimizer steps and
transforms the learning rate left by the entries before it (MMEngine chains them the same way).
Before `begin` an entry does nothing; from `end` on it holds its final value. Every value is a
closed form of the iteration, so the rate at any step is exact and resume needs only the step.

`end: max_iters` (or no `end`) means "the end of training", as MMSegmentation writes
`end=max_iters`: the schedule follows `train_cfg.max_iters=N`. `begin`/`end` may also be written
`max_iters - K`. A schedule whose last entry ends before or after `max_iters` is built as written, with
a warning naming the keys (`schedule_length_warnings`).
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import torch

from segaccel.registry import SCHEDULERS, ConfigError

logger = logging.getLogger(__name__)
_RELATIVE = re.compile(r"^\s*max_iters\s*(?:([-+])\s*(\d+)\s*)?$")


class _IterSchedule:
    """One schedule entry on `[begin, end)`; `end=None` means until training ends."""

    def __init__(self, begin: int = 0, end: int | None = None, by_epoch: bool = False) -> None:
        if by_epoch:
            raise ValueError(f"{type(self).__name__}: only by_epoch=False (iteration schedules) is supported")
        self.begin = begin
        self.end = end

    def __call__(self, lr: float, t: int, max_iters: int) -> float:
        end = self.end if self.end is not None else max_iters
        if t < self.begin:
            return lr
        return self.value(lr, min(t, end) - self.begin, max(end - self.begin, 1))

    def value(self, lr: float, progress: int, total: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


class LinearLR(_IterSchedule):
    """Linear factor from `start_factor` to `end_factor` (warm-up)."""

    def __init__(self, start_factor: float = 1.0 / 3, end_factor: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_factor, self.end_factor = start_factor, end_factor

    def value(self, lr: float, progress: int, total: int) -> float:
        return lr * (self.start_factor + (self.end_factor - self.start_factor) * progress / total)


class PolyLR(_IterSchedule):
    """`eta_min + (lr - eta_min) * (1 - progress / total) ** power`."""

    def __init__(self, eta_min: float = 0.0, power: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eta_min, self.power = eta_min, power

    def value(self, lr: float, progress: int, total: int) -> float:
        return self.eta_min + (lr - self.eta_min) * (1 - progress / total) ** self.power


class CosineAnnealingLR(_IterSchedule):
    """`eta_min + (lr - eta_min) * (1 + cos(pi * progress / T_max)) / 2`."""

    def __init__(self, T_max: int | None = None, eta_min: float = 0.0, **kwargs: Any) -> None:  # noqa: N803
        super().__init__(**kwargs)
        self.T_max, self.eta_min = T_max, eta_min

    def value(self, lr: float, progress: int, total: int) -> float:
        t_max = self.T_max or total
        return self.eta_min + (lr - self.eta_min) * (1 + math.cos(math.pi * min(progress, t_max) / t_max)) / 2


class StepLR(_IterSchedule):
    """`lr * gamma ** (progress // step_size)`."""

    def __init__(self, step_size: int, gamma: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step_size, self.gamma = step_size, gamma

    def value(self, lr: float, progress: int, total: int) -> float:
        return lr * self.gamma ** (progress // self.step_size)


class MultiStepLR(_IterSchedule):
    """`lr * gamma ** (number of milestones passed)`; milestones count from `begin`."""

    def __init__(self, milestones: list[int], gamma: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.milestones, self.gamma = sorted(milestones), gamma

    def value(self, lr: float, progress: int, total: int) -> float:
        return lr * self.gamma ** sum(progress >= m for m in self.milestones)


class TwoStageWarmupPolyLR(_IterSchedule):
    """EoMT's schedule: the parameters outside the backbone warm up linearly (from 0) over
    `warmup_iters[0]` steps, then decay as poly(`power`) to 0 at the end; the backbone's stay at 0 for
    those steps, warm up over the next `warmup_iters[1]`, then decay as poly to 0 at the end.

    It needs param groups that say which hold backbone parameters
    (`optim_wrapper.paramwise_cfg.split_backbone: true`) and is best the only entry.
    """

    per_group = True  # IterLRScheduler passes each param group

    def __init__(
        self, warmup_iters: tuple[int, int] = (500, 1000), power: float = 0.9, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if len(warmup_iters) != 2 or min(warmup_iters) < 0:
            raise ValueError(f"TwoStageWarmupPolyLR: warmup_iters: two counts >= 0, got {warmup_iters!r}")
        self.warmup_iters = (int(warmup_iters[0]), int(warmup_iters[1]))
        self.power = power

    def __call__(self, lr: float, t: int, max_iters: int, group: dict | None = None) -> float:
        backbone = None if group is None else group.get("backbone")
        if backbone is None:
            raise ValueError(
                "param_scheduler TwoStageWarmupPolyLR: the param groups must say which hold backbone "
                "parameters; set optim_wrapper.paramwise_cfg.split_backbone: true"
            )
        end = self.end if self.end is not None else max_iters
        t, total = min(t, end) - self.begin, max(end - self.begin, 1)
        if t < 0:
            return lr
        first, second = self.warmup_iters
        if not backbone:
            if t < first:
                return lr * t / first
            return lr * (1 - (t - first) / max(1, total - first)) ** self.power
        if t < first:
            return 0.0
        if t < first + second:
            return lr * (t - first) / second
        return lr * (1 - (t - first - second) / max(1, total - first - second)) ** self.power


class IterLRScheduler:
    """Sets every param group's lr from its `initial_lr` and the chained schedules at step `t`.

    `step()` is called once per optimizer step by the train loop (never once per process).
    `state_dict()`/`load_state_dict()` make it resumable through `accelerator.save_state`.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, schedules: list[_IterSchedule], max_iters: int
    ) -> None:
        self.optimizer = optimizer
        self.schedules = schedules
        self.max_iters = max_iters
        self.last_iter = 0
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._apply()

    def lr_at(self, base_lr: float, t: int, group: dict | None = None) -> float:
        lr = base_lr
        for schedule in self.schedules:
            if getattr(schedule, "per_group", False):  # a schedule that differs per param group
                lr = schedule(lr, t, self.max_iters, group)
            else:
                lr = schedule(lr, t, self.max_iters)
        return lr

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(group["initial_lr"], self.last_iter, group)

    def step(self) -> None:
        self.last_iter += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_iter": self.last_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_iter = int(state["last_iter"])
        self._apply()


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, param_scheduler: list[dict] | dict | None, max_iters: int
) -> IterLRScheduler:
    """Build the chained schedule of a config's `param_scheduler` list (`max_iters` in `begin`/`end`
    resolved to the run's length); warns when the schedule does not end at `max_iters`."""
    entries = resolve_schedule(param_scheduler, max_iters)
    for message in schedule_length_warnings(param_scheduler, max_iters):
        logger.warning(message)
    schedules = [SCHEDULERS.build(cfg, key=f"param_scheduler.{i}") for i, cfg in enumerate(entries)]
    return IterLRScheduler(optimizer, schedules, max_iters)


def _entries(param_scheduler: list[dict] | dict | None) -> list[dict]:
    if param_scheduler is None:
        return []
    return [param_scheduler] if isinstance(param_scheduler, dict) else list(param_scheduler)


def resolve_iteration(value: Any, max_iters: int, key: str) -> int | None:
    """An entry's `begin`/`end` as an iteration: ints as written, `max_iters` (± K) from the run."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    match = _RELATIVE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            f"{key}: {value!r} is not an iteration (an integer, `max_iters` or `max_iters - K`)"
        )
    sign, k = match.groups()
    return max_iters + (0 if k is None else int(k) * (1 if sign == "+" else -1))


def resolve_schedule(param_scheduler: list[dict] | dict | None, max_iters: int) -> list[dict]:
    """The `param_scheduler` entries with `begin`/`end` as iterations of a run of `max_iters`."""
    out = []
    for i, entry in enumerate(_entries(param_scheduler)):
        entry = dict(entry)
        for name in ("begin", "end"):
            if name in entry:
                entry[name] = resolve_iteration(entry[name], max_iters, f"param_scheduler.{i}.{name}")
        out.append(entry)
    return out


def schedule_length_warnings(param_scheduler: list[dict] | dict | None, max_iters: int) -> list[str]:
    """Why the schedule does not fit a run of `max_iters`, naming the keys; empty when it fits.

    Entries ending after `max_iters` never finish (the rate never reaches their end value); a
    schedule whose last entry ends before `max_iters` holds its final rate for the rest of the run;
    an entry beginning at or after `max_iters` never acts. `end: max_iters` (or none) always fits.
    """
    entries = resolve_schedule(param_scheduler, max_iters)
    if not entries or max_iters <= 0:
        return []
    messages = []
    ends = [(i, e.get("end") if e.get("end") is not None else max_iters) for i, e in enumerate(entries)]
    late = [f"param_scheduler.{i}.end={end}" for i, end in ends if end > max_iters]
    if late:
        messages.append(
            f"{', '.join(late)} after train_cfg.max_iters={max_iters}: that part of the schedule never "
            "finishes (write `end: max_iters` for a schedule that follows the run's length)"
        )
    last = max(end for _, end in ends)
    if last < max_iters:
        named = ", ".join(f"param_scheduler.{i}.end={end}" for i, end in ends if end == last)
        messages.append(
            f"the schedule ends at {named}, before train_cfg.max_iters={max_iters}: the learning rate "
            f"stays at its final value for the last {max_iters - last} iterations (write `end: max_iters` "
            "for a schedule that follows the run's length)"
        )
    idle = [
        f"param_scheduler.{i}.begin={e['begin']}"
        for i, e in enumerate(entries)
        if (e.get("begin") or 0) >= max_iters
    ]
    if idle:
        messages.append(f"{', '.join(idle)} at or after train_cfg.max_iters={max_iters}: never applied")
    return messages
