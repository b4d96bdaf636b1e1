"""Kill points for the interruption tests: a test facility, not a user feature.

A training process started with `SEGACCEL_TEST_KILL_AT=<point>` (and optionally
`SEGACCEL_TEST_KILL_AT_ITER=<N>`) in its environment kills itself with SIGKILL when it reaches
that point (at iteration N), deterministically: tests stop a run where they want, not when a timer
fires. Without the variable every point is a no-op. The setting is read once, at the first point a
process reaches, and kept: a run's kill point cannot change under it.

Points, in the order a run passes them:

- `after_step`: an optimizer step taken, its checkpoint (if any) not yet written;
- `validation`: in the middle of a validation pass (after each batch);
- checkpoint writes (`CHECKPOINT_STAGES`): `before_save` (nothing written yet), `files_written`
  (Accelerate's files in the temporary folder, no `segaccel_state.json`), `state_written` (the
  temporary folder complete but not renamed), `renamed` (`iter_<N>` in place, older ones not yet
  pruned), `pruned` (done);
- model exports (`EXPORT_STAGES`): `export_written` (the new `model/` or `best_model/` complete
  beside the old one), `export_swapped` (the old one moved aside, the new one not yet in place).
"""

from __future__ import annotations

import functools
import os
import signal

KILL_AT_ENV = "SEGACCEL_TEST_KILL_AT"
KILL_AT_ITER_ENV = "SEGACCEL_TEST_KILL_AT_ITER"

LOOP_POINTS = ("after_step", "validation")
CHECKPOINT_STAGES = ("before_save", "files_written", "state_written", "renamed", "pruned")
EXPORT_STAGES = ("export_written", "export_swapped")
KILL_POINTS = LOOP_POINTS + CHECKPOINT_STAGES + EXPORT_STAGES


@functools.cache
def kill_setting() -> tuple[str, int | None] | None:
    """`(point, iteration or None)` from the environment, read once; None when no point is set.

    A point or iteration that cannot be meant is an error naming the variable (a typo would
    otherwise let a fault test pass without ever killing the run).
    """
    point = os.environ.get(KILL_AT_ENV, "")
    if not point:
        return None
    if point not in KILL_POINTS:
        known = ", ".join(KILL_POINTS)
        raise ValueError(f"{KILL_AT_ENV}={point!r} is not a kill point; known points: {known}")
    at = os.environ.get(KILL_AT_ITER_ENV, "")
    if not at:
        return point, None
    try:
        return point, int(at)
    except ValueError:
        raise ValueError(f"{KILL_AT_ITER_ENV}={at!r}: expected an iteration number") from None


def kill_point(point: str, iteration: int) -> None:
    """Kill this process with SIGKILL if the test setting names `point` (at `iteration`)."""
    if point not in KILL_POINTS:
        raise ValueError(f"unknown kill point {point!r} (known: {', '.join(KILL_POINTS)})")
    setting = kill_setting()
    if setting is None or setting[0] != point or setting[1] not in (None, iteration):
        return
    os.kill(os.getpid(), signal.SIGKILL)
