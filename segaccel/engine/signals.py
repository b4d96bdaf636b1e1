"""SIGTERM and Ctrl-C during training: stop after the current iteration, with a checkpoint.

`StopSignals.handling()` turns SIGTERM/SIGINT into a stop request (`signum`) that the training
loop sees after its iteration (through the Runner's `stop_requested` hook); a second Ctrl-C aborts
at once. A signal sent to the whole process group (a terminal's Ctrl-C; torchrun passes SIGTERM on
that way) also reaches DataLoader workers, which PyTorch would end on SIGTERM: `shield` makes a
loader's workers ignore both signals while training, so they keep serving the batches the
interrupted iteration still needs until the checkpoint is written.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from segaccel.engine.logging import logger

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Turns SIGTERM/SIGINT into a stop request while `handling()` is active.

    Args:
        announce: log the request (the main process does; the others stay quiet).
    """

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self.signum: int | None = None  # the first stop signal received
        self._training: Any = None  # an Event set while training: DataLoader workers ignore signals

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """SIGTERM/SIGINT ask for a stop after the current iteration; a second Ctrl-C aborts at once.

        Outside the main thread (where Python cannot install handlers) nothing changes.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        owner = os.getpid()
        if self._training is None:
            try:
                self._training = multiprocessing.Event()
            except (ImportError, OSError):  # no semaphores on this platform: workers are not shielded
                self._training = None
        if self._training is not None:
            self._training.set()

        def handler(signum: int, frame: Any) -> None:
            if os.getpid() != owner:  # a forked DataLoader worker: the training process decides
                return
            if signum == signal.SIGINT and self.signum == signal.SIGINT:
                signal.signal(signal.SIGINT, previous[signal.SIGINT])
                raise KeyboardInterrupt
            if self.signum is None:
                self.signum = signum
                if not self.announce:
                    return
                again = " (Ctrl-C again to abort at once)" if signum == signal.SIGINT else ""
                logger.warning(
                    f"received {signal.Signals(signum).name}: stopping after this iteration, with a "
                    f"checkpoint{again}"
                )

        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            if self._training is not None:
                self._training.clear()  # from here on, workers die on SIGTERM again (clean interpreter exit)
            for s, h in previous.items():
                signal.signal(s, h)

    def shield(self, loader: Any) -> None:
        """Have `loader`'s workers ignore the stop signals while training (call inside `handling()`)."""
        if isinstance(loader, DataLoader) and self._training is not None:
            shield_workers(loader, self._training)


def shield_workers(loader: DataLoader, training: Any) -> None:
    """Have `loader`'s worker processes ignore SIGINT/SIGTERM while `training` (an Event) is set.

    PyTorch ends a worker on SIGTERM; a stop signal sent to a whole process group would take the
    batches the interrupted iteration still needs. Outside training the signals act as usual, so
    an exiting interpreter can still terminate its workers.
    """
    if loader.num_workers == 0 or getattr(loader.worker_init_fn, "_segaccel_shield", False):
        return
    init = functools.partial(_shielded_worker_init, training=training, inner=loader.worker_init_fn)
    init._segaccel_shield = True  # type: ignore[attr-defined]
    loader.worker_init_fn = init


def _shielded_worker_init(worker_id: int, training: Any, inner: Any = None) -> None:
    def handler(signum: int, frame: Any) -> None:
        if training.is_set():
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    if inner is not None:
        inner(worker_id)
