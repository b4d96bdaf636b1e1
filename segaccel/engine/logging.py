"""What a person sees: the start banner, interval log lines, a JSONL of scalars, trackers.

Only the main process prints or writes. Log lines follow MMEngine's shape:
`Iter(train) [  50/2000]  eta: 0:03:10  lr: 6.0000e-04  decode.acc_seg: 81.20  decode.loss_ce: 0.5123
 loss: 0.5123  grad_norm: 3.2100  time: 0.0950  data_time: 0.0040  memory: 1530`
(`grad_norm` when clipping; `memory` in MiB: peak GPU memory allocated on CUDA since the last line,
else the process's peak resident memory; `nonfinite_skipped`/`overflow_skipped` count skipped steps
when `skip_nonfinite` or a grad scaler is active).

Progress bars (`progress_bar`) are drawn only on a terminal, by the main process: when stderr is a
file or a pipe (nohup, SLURM, CI) the output holds the log lines alone, at the logging interval,
with no `\r` redraws and no escape sequences (the bars of `datasets` and `huggingface_hub` are
switched off too).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from accelerate import Accelerator
from tqdm.auto import tqdm

logger = logging.getLogger("segaccel")
_IN_NOTEBOOK = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)  # tqdm.auto chose the widget


class TqdmHandler(logging.StreamHandler):
    """Writes records through `tqdm.write`, so log lines do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # pragma: no cover - as logging.Handler does
            self.handleError(record)


def on_terminal(stream: IO[str] | None = None) -> bool:
    """Whether `stream` (default: stderr, where bars and log lines go) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Iterable[Any] | None = None, *, is_main: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar, drawn only on a terminal (or as a notebook widget) by the main process, else silent."""
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not (is_main and (on_terminal() or _IN_NOTEBOOK)), **kwargs)


def quiet_library_bars() -> None:
    """Off-terminal, switch off the progress bars of `datasets` and `huggingface_hub` (their `\r` redraws)."""
    if on_terminal():
        return
    import datasets
    from huggingface_hub.utils import disable_progress_bars

    datasets.disable_progress_bars()
    disable_progress_bars()


def setup_logging(log_file: Path | None, is_main: bool) -> None:
    """Log to stderr (main process only) and to `log_file` with timestamps.

    Off a terminal the libraries' progress bars are switched off (`quiet_library_bars`).
    """
    quiet_library_bars()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s - segaccel - %(levelname)s - %(message)s", "%Y/%m/%d %H:%M:%S")
    stream = TqdmHandler(sys.stderr)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if log_file is not None and is_main:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(fmt)
        logger.addHandler(fh)


def format_eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def format_value(key: str, value: float) -> str:
    if key == "lr":
        return f"{value:.4e}"
    if key == "memory" or key.endswith("_skipped"):
        return f"{value:.0f}"
    if "acc" in key or key == "aAcc" or (key[:1] == "m" and key[1:2].isupper()):  # aAcc, mIoU, mDice, ...
        return f"{value:.2f}"
    return f"{value:.4f}"


def finite_or_none(value: float) -> float | None:
    """`value` as a float, or None when NaN or infinite (JSON has no NaN: `scalars.jsonl` says null)."""
    value = float(value)
    return value if math.isfinite(value) else None


class ScalarLogger:
    """Interval logging of training scalars to the terminal, `scalars.jsonl` and trackers.

    `scalars.jsonl` is strict JSON, one object a line: a NaN or infinite scalar is written `null`
    (as `metrics.json`); the terminal line and the trackers show the value itself.
    """

    def __init__(self, accelerator: Accelerator, log_dir: Path, max_iters: int, use_trackers: bool) -> None:
        self.accelerator = accelerator
        self.max_iters = max_iters
        self.use_trackers = use_trackers
        self.jsonl = Path(log_dir) / "scalars.jsonl"
        if accelerator.is_main_process:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        self._t0: float | None = None
        self._it0 = 0

    def start(self, iteration: int) -> None:
        self._t0, self._it0 = time.perf_counter(), iteration

    def eta(self, iteration: int) -> float:
        if self._t0 is None or iteration <= self._it0:
            return float("nan")
        per_iter = (time.perf_counter() - self._t0) / (iteration - self._it0)
        return per_iter * (self.max_iters - iteration)

    def log(self, mode: str, iteration: int, scalars: dict[str, float], total: int | None = None) -> None:
        """Print one line and record the scalars (main process only)."""
        if not self.accelerator.is_main_process:
            return
        total = total or self.max_iters
        width = len(str(total))
        # a stand-alone test has no training iteration to show
        parts = [f"Iter({mode}) [{iteration:>{width}}/{total}]" if iteration else f"Iter({mode})"]
        if mode == "train":
            eta = self.eta(iteration)
            if eta == eta:  # not NaN
                parts.append(f"eta: {format_eta(eta)}")
        parts += [f"{k}: {format_value(k, v)}" for k, v in scalars.items()]
        logger.info("  ".join(parts))
        record = {"mode": mode, "iter": iteration, **{k: finite_or_none(v) for k, v in scalars.items()}}
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        if self.use_trackers:
            self.accelerator.log({f"{mode}/{k}": v for k, v in scalars.items()}, step=iteration)


def banner(lines: dict[str, Any]) -> str:
    """A boxed block of `key: value` lines for the start of a run."""
    width = max(len(k) for k in lines)
    body = "\n".join(f"  {k:<{width}} : {v}" for k, v in lines.items())
    rule = "-" * 72
    return f"\n{rule}\n{body}\n{rule}"


def flat_config(cfg: dict[str, Any], prefix: str = "", keep_lists: bool = False) -> dict[str, Any]:
    """Dotted keys to scalars (lists as strings, or kept with `keep_lists`), for trackers and diffs."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat_config(v, key + ".", keep_lists))
        elif isinstance(v, (int, float, str, bool)) or v is None or (keep_lists and isinstance(v, list)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def training_banner(
    context: Any,
    loop: Any,
    *,
    precision: str,
    start_iter: int,
    config: Any,
    work_dir: Any,
    datasets: tuple[Any, Any],
    seed: int,
    origin: tuple[str, Any] | None = None,
    trackers: Any = None,
) -> str:
    """The start-of-training block: config, processes, precision, batch, iterations, sizes, ...

    `context` is the run's `LoopContext` (accelerator, model, batch settings), `loop` the train
    loop, `precision` the precision training really runs in, `datasets` (train, val or None),
    `origin` `("resumed from" | "load from", where)`.
    """
    acc = context.accelerator
    batch, accum = context.train_batch_size, context.accumulative_counts
    model = context.unwrapped_model
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if precision != acc.mixed_precision:
        precision = f"{precision} ({acc.mixed_precision} requested: not available on {acc.device.type})"
    iterations = f"{loop.max_iters} (starting at {start_iter})"
    if hasattr(loop, "iters_per_epoch"):
        iterations += f" = {loop.max_epochs} epochs x {loop.iters_per_epoch}"
    lines = {
        "config": config or "(dict)",
        "work dir": work_dir,
        "processes": f"{acc.num_processes} ({acc.distributed_type.value})",
        "device": acc.device,
        "mixed precision": precision,
        "batch": f"{batch} per process x {acc.num_processes} processes x {accum} accumulation = "
        f"{batch * acc.num_processes * accum} per iteration",
        "iterations": iterations,
        "train / val samples": " / ".join(_num_samples(d) for d in datasets),
        "parameters": f"{n_params / 1e6:.2f} M ({n_train / 1e6:.2f} M trainable)",
        "seed": seed,
    }
    if license := getattr(getattr(model, "backbone", None), "weights_license", None):
        lines["weights licence"] = f"{license} (the backbone's weights; exported models and cards carry it)"
    if context.clip_grad:
        lines["clip grad"] = context.clip_grad
    if context.skip_nonfinite:
        lines["non-finite steps"] = "skipped (optim_wrapper.skip_nonfinite)"
    if origin is not None:
        lines[origin[0]] = origin[1]
    if trackers:
        lines["trackers"] = trackers
    return "segaccel training" + banner(lines)


def _num_samples(dataset: Any) -> str:
    if dataset is None:
        return "0"
    try:
        return str(len(dataset))
    except TypeError:  # a streamed dataset
        return "streamed"
