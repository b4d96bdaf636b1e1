"""`Runner`: builds everything a config describes and runs training, validation or testing.

All device, process, precision and state handling goes through Accelerate. Batches are never
dispatched from rank 0: each process reads its own shard (`segaccel.data.samplers`) and the
model's data preprocessor moves it to the device.

State: checkpoints (`accelerator.save_state`, written atomically by `engine.checkpoint`) hold the
model, optimizer, LR schedule position, grad scaler and every process's RNG states; the position in
the data stream is the iteration itself (the training stream is a pure function of the seed), so a
resumed run continues exactly as if it had never stopped. SIGTERM and Ctrl-C stop a run after the
current iteration with a checkpoint; a NaN/inf loss stops it after saving the last good state.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch import nn
from torch.utils.data import DataLoader

import segaccel.evaluation  # noqa: F401  (registers the metrics)
from segaccel.config import dump_config, get_path, to_plain
from segaccel.data import build_dataset, seg_collate
from segaccel.data.crop_check import check_crop_size
from segaccel.data.samplers import InfiniteSampler, ShardedEvalSampler
from segaccel.data.streaming import SegStreamDataset, StreamCheckpoint, StreamLoader, stream_collate
from segaccel.engine.checkpoint import (
    checkpoint_stage,
    latest_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
    write_folder_atomically,
)
from segaccel.engine.logging import ScalarLogger, banner, logger, setup_logging
from segaccel.engine.loops import (
    IterBasedTrainLoop,
    NonFiniteLossError,
    TestLoop,
    TrainingInterrupted,
    ValLoop,
)
from segaccel.engine.optim import build_optimizer
from segaccel.engine.schedulers import build_lr_scheduler
from segaccel.model_card import folder_model_name, is_generated_card
from segaccel.models import Segmentor
from segaccel.models.segmentor import load_pretrained_weights
from segaccel.registry import LOOPS, METRICS, MODELS, ConfigError
from segaccel.visualization import get_palette, make_comparison


class Runner:
    """Train/validate/test a segmentor from a resolved config dict.

    Args:
        cfg: the resolved config (after `_base_` and overrides).
        work_dir: output folder; default `cfg["work_dir"]` or `work_dirs/<config name>`.
        config_path: the config file (names the default work dir, shown in the banner).
        resume: `True` for the latest complete checkpoint in `WORK_DIR/checkpoints`, or a path;
            default the config's `resume` key.
        mixed_precision: `no`/`fp16`/`bf16`; default the config's, else Accelerate's launch setting.
            fp16 needs a GPU (Accelerate ignores it on a CPU: the run warns and trains in fp32).
    """

    def __init__(
        self,
        cfg: dict[str, Any],
        work_dir: str | os.PathLike | None = None,
        config_path: str | os.PathLike | None = None,
        resume: bool | str | None = None,
        mixed_precision: str | None = None,
    ) -> None:
        self.cfg = copy.deepcopy(cfg)
        name = Path(config_path).stem if config_path else "run"
        self.work_dir = Path(work_dir or self.cfg.get("work_dir") or Path("work_dirs") / name)
        self.cfg["work_dir"] = str(self.work_dir)
        self.config_path = config_path
        self.resume = resume if resume is not None else self.cfg.get("resume") or None
        report_to = self.cfg.get("report_to") or None
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        self.accelerator = Accelerator(
            mixed_precision=mixed_precision or self.cfg.get("mixed_precision") or None,
            log_with=report_to,
            project_config=ProjectConfiguration(
                project_dir=str(self.work_dir), logging_dir=str(self.work_dir / "logs")
            ),
            # Several processes on a machine without a GPU (`accelerate launch --multi_gpu` or torchrun):
            # Accelerate sets up gloo only when told it runs on the CPU, else each process runs alone.
            cpu=launched > 1 and not _has_gpu(),
        )
        if launched > 1 and self.accelerator.num_processes != launched:
            raise RuntimeError(
                f"{launched} processes were launched (WORLD_SIZE) but Accelerate set up "
                f"{self.accelerator.num_processes}: each would train on its own"
            )
        setup_logging(self.work_dir / "logs" / "train.log", self.accelerator.is_main_process)
        self.precision = effective_precision(self.accelerator)
        if self.precision != self.accelerator.mixed_precision:
            logger.warning(
                f"mixed precision {self.accelerator.mixed_precision} was requested, but Accelerate runs "
                f"fp16 only on GPUs: this run on {self.accelerator.device} trains in full fp32 precision. "
                "Use --mixed_precision bf16 for autocast on a CPU, or --mixed_precision no to silence this."
            )
        self.seed = int(self.cfg.get("seed", 0))
        set_seed(self.seed)

        hooks = self.cfg.get("default_hooks") or {}
        self.log_interval = int(get_path(hooks, "logger.interval", 50))
        self.ckpt_interval = int(get_path(hooks, "checkpoint.interval", -1) or -1)
        self.max_keep_ckpts = int(get_path(hooks, "checkpoint.max_keep_ckpts", -1) or -1)
        self.save_best = get_path(hooks, "checkpoint.save_best", None)
        self.vis_num_samples = int(get_path(hooks, "visualization.num_samples", 4) or 0)
        self.vis_interval = int(get_path(hooks, "visualization.interval", 1) or 0)
        optim_cfg = self.cfg.get("optim_wrapper") or {}
        self.accumulative_counts = int(optim_cfg.get("accumulative_counts", 1))
        if self.accumulative_counts < 1:
            raise ConfigError(
                f"optim_wrapper.accumulative_counts must be >= 1, got {self.accumulative_counts}"
            )
        self.clip_grad = check_clip_grad(optim_cfg.get("clip_grad") or None)
        if "skip_nonfinite" in self.cfg:
            raise ConfigError("skip_nonfinite belongs under optim_wrapper: optim_wrapper.skip_nonfinite=true")
        self.skip_nonfinite = bool(optim_cfg.get("skip_nonfinite", False))
        self.train_batch_size = int(get_path(self.cfg, "train_dataloader.batch_size", 2))

        self.model: nn.Module | None = None
        self.optimizer = None
        self.lr_scheduler = None
        self.train_loop: IterBasedTrainLoop | None = None
        self.val_loop: ValLoop | None = None
        self.train_dataset = None
        self.best: dict[str, Any] = {}
        self._stop_signal: int | None = None
        self._stop_requested = False
        self._training: Any = None  # an Event set while training: DataLoader workers ignore signals
        self._last_saved: tuple[int, Path] | None = None
        self._resumed_from: Path | None = None
        self._id2label: dict[int, str] | None = None
        self.scalar_logger = ScalarLogger(
            self.accelerator,
            self.work_dir / "logs",
            int(get_path(self.cfg, "train_cfg.max_iters", 0) or 0),
            use_trackers=report_to is not None,
        )

    # ------------------------------------------------------------------------------------------
    # building
    # ------------------------------------------------------------------------------------------
    @property
    def unwrapped_model(self) -> Segmentor:
        return self.accelerator.unwrap_model(self.model)

    def _dataset_cfg(self, loader_key: str) -> dict[str, Any]:
        dataset_cfg = get_path(self.cfg, f"{loader_key}.dataset")
        if not isinstance(dataset_cfg, dict):
            raise ConfigError(f"{loader_key}.dataset: missing (a mapping with `path`, `split`, `pipeline`)")
        return copy.deepcopy(dataset_cfg)

    def build_dataset(self, loader_key: str):
        """The `SegDataset` (or, streamed, `SegStreamDataset`) of `<loader_key>.dataset`.

        The main process prepares data first. A streamed split is sharded across processes here,
        once (the dataloaders are never prepared by Accelerate); the training stream's position is
        registered for checkpointing, so `--resume` continues the stream where it stopped.
        """
        dataset_cfg = self._dataset_cfg(loader_key)
        split = dataset_cfg.pop("split", "train" if loader_key.startswith("train") else "validation")
        num_classes = get_path(self.cfg, "model.decode_head.num_classes")
        training = loader_key.startswith("train")
        acc = self.accelerator
        with acc.main_process_first():
            try:
                dataset = build_dataset(
                    dataset_cfg,
                    split,
                    seed=self.seed,
                    num_classes=num_classes,
                    rank=acc.process_index,
                    world_size=acc.num_processes,
                    training=training,
                    key=f"{loader_key}.dataset",
                )
            except (ConnectionError, FileNotFoundError) as exc:  # a Hub id or folder that is not there
                error = ConnectionError if isinstance(exc, ConnectionError) else FileNotFoundError
                raise error(
                    f"{loader_key}.dataset.path: cannot load {dataset_cfg.get('path')!r}: {exc}"
                    + _offline_hint()
                ) from exc
        if training:  # a crop larger than every image, with nothing padding up to it: say so now
            pad_size = get_path(self.cfg, "model.data_preprocessor.size")
            check_crop_size(dataset, f"{loader_key}.dataset", pad_size)
        if self._id2label is None:
            self._id2label = dataset.id2label
        if isinstance(dataset, SegStreamDataset):
            if training and getattr(self, "_stream_checkpoint", None) is None:
                self._stream_checkpoint = StreamCheckpoint(acc.process_index, acc.num_processes)
                acc.register_for_checkpointing(self._stream_checkpoint)
        elif len(dataset) == 0:
            raise ValueError(f"{loader_key}.dataset: split {split!r} of {dataset_cfg.get('path')!r} is empty")
        return dataset

    def model_config(self) -> dict[str, Any]:
        """`cfg.model` completed with what travels in `config.json`: labels, palette, test pipeline."""
        model_cfg = copy.deepcopy(self.cfg.get("model") or {})
        if not model_cfg:
            raise ConfigError("model: missing")
        id2label = model_cfg.get("id2label") or self._id2label
        num_classes = get_path(model_cfg, "decode_head.num_classes")
        if id2label:
            id2label = {int(k): str(v) for k, v in id2label.items()}
            if (
                num_classes is not None
                and num_classes != len(id2label)
                and get_path(model_cfg, "decode_head.out_channels") != 1
            ):
                raise ConfigError(
                    f"model.decode_head.num_classes is {num_classes} but id2label has {len(id2label)} "
                    f"classes ({list(id2label.values())[:6]}...)"
                )
            model_cfg["id2label"] = id2label
        n = num_classes or (len(id2label) if id2label else 2)
        palette = model_cfg.get("palette") or get_path(self.cfg, "train_dataloader.dataset.palette")
        model_cfg["palette"] = palette or get_palette(n)
        if not model_cfg.get("test_pipeline"):
            for key in ("test_dataloader", "val_dataloader"):
                pipeline = get_path(self.cfg, f"{key}.dataset.pipeline")
                if pipeline:
                    model_cfg["test_pipeline"] = copy.deepcopy(pipeline)
                    break
        return to_plain(model_cfg)

    def build_model(self, use_load_from: bool = True) -> Segmentor:
        """The config's model (SyncBN only where it works), with `load_from` weights if given."""
        model = MODELS.build(self.model_config(), key="model")
        model = adapt_sync_batchnorm(model, self.accelerator)
        load_from = self.cfg.get("load_from")
        if load_from and use_load_from:
            try:
                load_weights(model, load_from)
            except FileNotFoundError as exc:  # name the config key that points nowhere
                raise FileNotFoundError(f"load_from: {exc}") from exc
        return model

    def _train_dataloader(self, dataset, start_iter: int) -> DataLoader | StreamLoader:
        loader_cfg = self.cfg.get("train_dataloader") or {}
        batch_size = int(loader_cfg.get("batch_size", 2))
        num_workers = int(loader_cfg.get("num_workers", 0))
        if isinstance(dataset, SegStreamDataset):
            return self._stream_dataloader(dataset, loader_cfg, start_iter)
        make_sampler = self.train_loop.build_sampler if self.train_loop is not None else InfiniteSampler
        sampler = make_sampler(
            len(dataset),
            batch_size,
            seed=self.seed,
            shuffle=loader_cfg.get("shuffle", True),
            rank=self.accelerator.process_index,
            world_size=self.accelerator.num_processes,
            start_batch=start_iter * self.accumulative_counts,
        )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            collate_fn=seg_collate,
            pin_memory=self.accelerator.device.type == "cuda",
            persistent_workers=num_workers > 0,
            prefetch_factor=loader_cfg.get("prefetch_factor") if num_workers > 0 else None,
        )

    def _stream_dataloader(
        self, dataset: SegStreamDataset, loader_cfg: dict[str, Any], start_iter: int
    ) -> StreamLoader:
        """Batches of a streamed training split (already sharded by process), tracked for checkpoints."""
        checkpoint = self._stream_checkpoint
        if start_iter > 0:
            if checkpoint.loaded:
                dataset.resume_from(checkpoint.loaded)
                logger.info(
                    f"the training stream resumes where the checkpoint left it (iteration {start_iter})"
                )
            else:
                logger.warning("the checkpoint holds no stream position: the training stream starts again")
        num_workers = int(loader_cfg.get("num_workers", 0))
        loader = DataLoader(
            dataset,
            batch_size=int(loader_cfg.get("batch_size", 2)),
            num_workers=num_workers,
            collate_fn=stream_collate,
            pin_memory=self.accelerator.device.type == "cuda",
            persistent_workers=num_workers > 0,
            prefetch_factor=loader_cfg.get("prefetch_factor") if num_workers > 0 else None,
        )
        return StreamLoader(loader, checkpoint)

    def _eval_dataloader(self, loader_key: str, dataset) -> DataLoader:
        loader_cfg = self.cfg.get(loader_key) or {}
        num_workers = int(loader_cfg.get("num_workers", 0))
        if isinstance(dataset, SegStreamDataset):  # each process reads its own shard once
            return DataLoader(
                dataset,
                batch_size=int(loader_cfg.get("batch_size", 1)),
                num_workers=num_workers,
                collate_fn=seg_collate,
                pin_memory=self.accelerator.device.type == "cuda",
            )
        sampler = ShardedEvalSampler(
            len(dataset), self.accelerator.process_index, self.accelerator.num_processes
        )
        return DataLoader(
            dataset,
            batch_size=int(loader_cfg.get("batch_size", 1)),
            sampler=sampler,
            num_workers=num_workers,
            collate_fn=seg_collate,
            pin_memory=self.accelerator.device.type == "cuda",
        )

    def build_evaluator(self, key: str):
        evaluator_cfg = copy.deepcopy(self.cfg.get(key) or {"type": "IoUMetric"})
        model = self.unwrapped_model
        evaluator_cfg.setdefault("num_classes", model.num_classes)
        if model.id2label:
            evaluator_cfg.setdefault("class_names", [model.id2label[i] for i in sorted(model.id2label)])
        return METRICS.build(evaluator_cfg, key=key)

    # ------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        """Train as `train_cfg` says; returns the last validation metrics.

        Raises `TrainingInterrupted` after a SIGTERM/SIGINT (or `request_stop`) once a checkpoint is
        saved, and `NonFiniteLossError` on a NaN/inf loss once the last good state is saved.
        """
        acc = self.accelerator
        cfg = self.cfg
        train_cfg = copy.deepcopy(cfg.get("train_cfg") or {})
        loop_type = train_cfg.pop("type", "IterBasedTrainLoop")
        train_dataset = self.build_dataset("train_dataloader")
        self.train_dataset = train_dataset
        val_dataset = self.build_dataset("val_dataloader") if cfg.get("val_dataloader") else None

        resume_path = self._resume_path()
        if resume_path is not None and cfg.get("load_from"):
            logger.info(f"load_from is not used: the weights come from the checkpoint {resume_path}")
        self.model = self.build_model(use_load_from=resume_path is None)
        self.optimizer = build_optimizer(self.model, cfg.get("optim_wrapper") or {})
        self.train_loop = LOOPS.build({"type": loop_type, **train_cfg}, key="train_cfg", runner=self)
        self.scalar_logger.max_iters = self.train_loop.max_iters
        self.lr_scheduler = build_lr_scheduler(
            self.optimizer, cfg.get("param_scheduler"), self.train_loop.max_iters
        )
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        acc.register_for_checkpointing(self.lr_scheduler)
        if val_dataset is not None:
            self.val_loop = ValLoop(
                self,
                self._eval_dataloader("val_dataloader", val_dataset),
                self.build_evaluator("val_evaluator"),
            )
            self._val_dataset = val_dataset

        start_iter = self._load_checkpoint(resume_path) if resume_path is not None else 0
        self.train_loop.iter = start_iter
        if start_iter >= self.train_loop.max_iters:
            logger.warning(
                f"the checkpoint is at iteration {start_iter} of {self.train_loop.max_iters}: nothing is "
                "left to train (raise train_cfg.max_iters to train on); exporting the model"
            )
        if acc.is_main_process:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, self.work_dir / "config.yaml")
        if report_to := cfg.get("report_to"):
            acc.init_trackers(Path(self.work_dir).name, config=_flat_config(cfg))
        self._log_banner(train_dataset, val_dataset, start_iter)

        try:
            with self._stop_on_signals():
                loader = self._train_dataloader(train_dataset, start_iter)
                # A SIGTERM/Ctrl-C sent to the whole process group (torchrun passes one on that way)
                # also reaches DataLoader workers: while training, they ignore it and keep serving
                # batches until the checkpoint is written.
                for dl in (getattr(loader, "loader", loader), getattr(self.val_loop, "dataloader", None)):
                    if isinstance(dl, DataLoader) and self._training is not None:
                        shield_workers(dl, self._training)
                # Starting a DataLoader iterator draws its workers' base seed from the global torch RNG:
                # keep that draw out of the training RNG stream, so a resumed run's stream is the
                # uninterrupted one.
                with torch.random.fork_rng(devices=[]):
                    data_iter = iter(loader)
                metrics = self.train_loop.run(data_iter)
            self.export_model(self.work_dir / "model", metrics)
            self.publish_model(metrics)
        finally:
            if report_to:
                acc.end_training()
        return metrics

    # ------------------------------------------------------------------------------------------
    # state: checkpoints, resume, stopping
    # ------------------------------------------------------------------------------------------
    def _resume_path(self) -> Path | None:
        """The checkpoint `resume` names (the latest complete one for `True`), or None."""
        if not self.resume:
            return None
        ckpt_root = self.work_dir / "checkpoints"
        if self.resume is True or self.resume == "auto":
            path = latest_checkpoint(ckpt_root)
            if path is None:
                logger.warning(f"--resume: no complete checkpoint in {ckpt_root}; starting from iteration 0")
            return path
        path = Path(self.resume)
        read_checkpoint_state(path)  # a clear error for a folder that is not a complete checkpoint
        return path

    def _load_checkpoint(self, path: Path) -> int:
        """Restore everything `save_state` wrote; returns the iteration to continue from."""
        state = read_checkpoint_state(path)
        self.accelerator.wait_for_everyone()
        self.accelerator.load_state(str(path))
        self.best = state.get("best", {})
        self._resumed_from = path
        changes = config_changes(state.get("config"), self.cfg)
        if state.get("num_processes") not in (None, self.accelerator.num_processes):
            changes.append(
                f"processes: {state['num_processes']} -> {self.accelerator.num_processes} (the data stream "
                "continues in global batches of the new size; not an exact continuation)"
            )
        if changes:
            shown = changes[:20] + ([f"... and {len(changes) - 20} more"] if len(changes) > 20 else [])
            logger.warning(
                "resuming with a config that differs from the checkpoint's (the new values apply from "
                f"iteration {state['iteration']} on):\n  " + "\n  ".join(shown)
            )
        elif "config" not in state and state.get("config_digest") not in (None, config_digest(self.cfg)):
            logger.warning("resuming with a config that differs from the checkpoint's config")
        logger.info(f"resumed from {path} at iteration {state['iteration']}")
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
        )
        if name is None:
            self._last_saved = (iteration, path)
        if self.accelerator.is_main_process:
            logger.info(f"saved checkpoint {path}")
        return path

    def after_train_iter(self, iteration: int, metrics: dict[str, float] | None) -> None:
        """Checkpoint at the interval and at the end; keep the best model by `save_best`."""
        checkpoint_stage("after_step", iteration)
        if metrics and self.save_best:
            self._update_best(iteration, metrics)
        last = iteration == self.train_loop.max_iters
        if last or self.train_loop.should_checkpoint(iteration, self.ckpt_interval):
            self.save_checkpoint(iteration)

    def _update_best(self, iteration: int, metrics: dict[str, float]) -> None:
        """A new best `save_best` metric: checkpoint `checkpoints/best_<metric>` and `best_model/`."""
        key = self.save_best if self.save_best != "auto" else "mIoU"
        value = metrics.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
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
        flag = self._stop_requested or self._stop_signal is not None
        acc = self.accelerator
        if acc.num_processes > 1:
            t = acc.reduce(torch.tensor([float(flag)], device=acc.device), reduction="sum")
            flag = bool(t.item() > 0)
        return flag

    def on_stop(self, iteration: int) -> TrainingInterrupted:
        """Save a checkpoint after a stop request; the error to raise, with how to resume."""
        path = self.save_checkpoint(iteration)
        how = signal.Signals(self._stop_signal).name if self._stop_signal is not None else "a stop request"
        msg = (
            f"training stopped by {how} at iteration {iteration}/{self.train_loop.max_iters}; checkpoint "
            f"saved to {path}. Resume with the same command plus --resume, e.g.\n  "
            f"{self.resume_command()}"
        )
        if self.accelerator.is_main_process:
            logger.warning(msg)
        return TrainingInterrupted(msg, iteration, path, self._stop_signal)

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

    def resume_command(self) -> str:
        config = self.config_path or "CONFIG"
        return f"python scripts/train.py {config} --work-dir {self.work_dir} --resume"

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT ask for a stop after the current iteration; a second Ctrl-C aborts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
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
            if signum == signal.SIGINT and self._stop_signal == signal.SIGINT:
                signal.signal(signal.SIGINT, previous[signal.SIGINT])
                raise KeyboardInterrupt
            if self._stop_signal is None:
                self._stop_signal = signum
                if not self.accelerator.is_main_process:
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

    def publish_model(self, metrics: dict[str, float] | None = None) -> None:
        """Push `WORK_DIR/model` when `push_to_hub: true` (main process only).

        The folder is pushed to `hub_model_id` (default: the work dir's name; `hub_private: true` for
        a private repo) through `segaccel.hub.push_model_dir`, with the card `export_model` wrote.
        """
        acc = self.accelerator
        if acc.is_main_process and self.cfg.get("push_to_hub"):
            from segaccel.hub import push_model_dir

            repo_id = self.cfg.get("hub_model_id") or self.work_dir.name
            url = push_model_dir(
                self.work_dir / "model",
                repo_id,
                private=True if self.cfg.get("hub_private") else None,
                commit_message=f"segaccel: {self.work_dir.name}, {self.train_loop.max_iters} iterations",
                train_command=_command_line(),
            )
            logger.info(f"pushed the final model to {repo_id}: {url}")
        acc.wait_for_everyone()

    def export_model(self, out_dir: Path, metrics: dict[str, float] | None = None) -> None:
        """Write `out_dir` (main process only): `save_pretrained`'s files, the resolved `config.yaml`,
        `metrics.json` (with the last validation's per-class figures) and a model card with them and
        the training command.

        The folder is written beside `out_dir` and swapped into place (`write_folder_atomically`), so
        a run killed while exporting never leaves a half-written model; a `README.md` written by
        hand in `out_dir` is kept.
        """
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            out_dir = Path(out_dir)
            iteration = self.train_loop.iter if self.train_loop is not None else 0

            def write(folder: Path) -> None:
                dump_config(self.cfg, folder / "config.yaml")
                if metrics:
                    with open(folder / "metrics.json", "w", encoding="utf-8") as f:
                        json.dump({**metrics, **self._per_class_table()}, f, indent=2)
                readme = out_dir / "README.md"
                if readme.is_file() and not is_generated_card(readme.read_text(encoding="utf-8")):
                    shutil.copy2(readme, folder / "README.md")
                card = {"model_name": folder_model_name(out_dir), "train_command": _command_line()}
                self.unwrapped_model.save_pretrained(folder, model_card_kwargs=card)

            write_folder_atomically(out_dir, write, iteration)
            logger.info(f"exported model to {out_dir}")
        self.accelerator.wait_for_everyone()

    def _per_class_table(self) -> dict[str, Any]:
        """`{"per_class": {metric: {class: value}}}` of the last validation (empty without one)."""
        evaluator = getattr(self.val_loop, "evaluator", None)
        per_class = getattr(evaluator, "per_class", None)
        if not per_class:
            return {}
        names = list(getattr(evaluator, "class_names", []))
        return {
            "per_class": {
                metric: {n: None if math.isnan(v) else round(float(v), 2) for n, v in zip(names, values)}
                for metric, values in per_class.items()
            }
        }

    # ------------------------------------------------------------------------------------------
    # evaluation
    # ------------------------------------------------------------------------------------------
    def test(
        self,
        model: Segmentor | None = None,
        checkpoint: str | None = None,
        loader_key: str = "test_dataloader",
        *,
        test_cfg: dict | None = None,
        tta: dict | None = None,
        show_dir: str | os.PathLike | None = None,
        out_dir: str | os.PathLike | None = None,
        original_ids: bool = False,
        confusion_matrix: bool = False,
    ) -> dict[str, float]:
        """Evaluate `model` (or the config's model, with `checkpoint` weights) on `loader_key`.

        `test_cfg` replaces the model's inference mode (`{"mode": "slide", "crop_size", "stride"}`);
        `tta` wraps it in a `SegTTAModel` (`{"scales": [...], "flip": bool}`). Writes
        `WORK_DIR/metrics.json` (the summary and a `per_class` table); `out_dir` gets the predicted
        masks as PNG label ids (`original_ids`: the dataset's stored ids), `show_dir` overlays,
        `confusion_matrix` the row-normalised confusion matrix (PNG + CSV) in the work dir. Masks
        and overlays are written by each process for its own samples. Returns the summary.
        """
        from segaccel.engine.test_outputs import (
            OverlayWriter,
            PredictionWriter,
            per_class_table,
            write_confusion_matrix,
        )
        from segaccel.models.tta import SegTTAModel

        acc = self.accelerator
        if not self.cfg.get(loader_key):
            loader_key = "val_dataloader"
        evaluator_key = "test_evaluator" if loader_key == "test_dataloader" else "val_evaluator"
        dataset = self.build_dataset(loader_key)
        if model is None:
            model = self.build_model()
            if checkpoint:
                load_weights(model, checkpoint, strict=True)
        if test_cfg is not None:
            model.test_cfg = test_cfg
        segmentor = model
        if tta:
            model = SegTTAModel(segmentor, **tta)
        self.model = acc.prepare_model(model, evaluation_mode=True)
        evaluator = self.build_evaluator(evaluator_key)
        class_names = list(evaluator.class_names)
        writers: list[Any] = []
        if out_dir is not None:
            writers.append(
                PredictionWriter(
                    out_dir,
                    original_ids=original_ids,
                    reduce_zero_label=bool(getattr(dataset, "reduce_zero_label", False)),
                    label_map=getattr(dataset, "label_map", None),
                )
            )
        if show_dir is not None:
            palette = segmentor.palette or get_palette(segmentor.num_classes)
            writers.append(OverlayWriter(show_dir, palette, class_names, dataset=dataset))
        loader = self._eval_dataloader(loader_key, dataset)
        if acc.is_main_process:
            size = len(dataset) if hasattr(dataset, "__len__") else "streamed"
            how = dict(segmentor.test_cfg)
            if tta:
                how["tta"] = {"scales": model.scales, "flip": model.flip}
            logger.info(
                f"testing on {size} samples of {getattr(dataset, 'split', loader_key)!r} with "
                f"{acc.num_processes} process(es), batch {loader.batch_size} per process, {how}"
            )
        metrics = TestLoop(self, loader, evaluator, writers=writers).run()
        if acc.is_main_process:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            summary = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}
            table = per_class_table(evaluator.per_class, class_names)
            with open(self.work_dir / "metrics.json", "w", encoding="utf-8") as f:
                json.dump({**summary, "per_class": table}, f, indent=2)
            logger.info(f"wrote {self.work_dir / 'metrics.json'}")
            if confusion_matrix:
                paths = write_confusion_matrix(evaluator.confusion_matrix, class_names, self.work_dir)
                logger.info("wrote " + ", ".join(str(p) for p in paths))
        for writer in writers:
            if writer.written and acc.is_main_process:
                folder = getattr(writer, "out_dir", None) or getattr(writer, "show_dir", None)
                logger.info(f"wrote {len(writer.written)} files (this process's) to {folder}")
        acc.wait_for_everyone()
        return metrics

    def write_overlays(self, samples: list, iteration: int) -> None:
        """Image | ground truth | prediction PNGs of a few fixed validation samples."""
        dataset = getattr(self, "_val_dataset", None)
        if dataset is None or not hasattr(dataset, "load_results"):
            return  # a streamed validation split has no random access to its images
        out_dir = self.work_dir / "vis" / f"iter_{iteration}"
        out_dir.mkdir(parents=True, exist_ok=True)
        model = self.unwrapped_model
        names = [model.id2label[i] for i in sorted(model.id2label)] if model.id2label else None
        for j, sample in enumerate(samples):
            index = j * self.accelerator.num_processes
            image = dataset.load_results(index)["img"]
            gt = sample.gt_sem_seg.data[0].numpy() if "gt_sem_seg" in sample else None
            pred = sample.pred_sem_seg.data[0].numpy()
            make_comparison(image, gt, pred, model.palette, class_names=names, min_height=192).save(
                out_dir / f"{index:05d}.png"
            )

    def log_overlays_to_trackers(self, iteration: int) -> None:
        """Send the overlay PNGs of `iteration` to the trackers that take images (tensorboard, wandb)."""
        if not self.accelerator.is_main_process or not self.accelerator.trackers:
            return
        from PIL import Image

        files = sorted((self.work_dir / "vis" / f"iter_{iteration}").glob("*.png"))
        images = {f"val/overlay_{f.stem}": np.asarray(Image.open(f).convert("RGB")) for f in files}
        if not images:
            return
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                batched = {k: v[None] for k, v in images.items()}  # (1, H, W, 3)
                tracker.log_images(batched, step=iteration, dataformats="NHWC")
            elif hasattr(tracker, "log_images"):
                try:
                    tracker.log_images({k: [v] for k, v in images.items()}, step=iteration)
                except Exception as err:  # a tracker's image API differs: never stop training for it
                    logger.warning(f"could not send overlays to the {tracker.name} tracker: {err}")

    def _log_banner(self, train_dataset, val_dataset, start_iter: int) -> None:
        acc = self.accelerator
        if not acc.is_main_process:
            return
        batch = self.train_batch_size
        total = batch * acc.num_processes * self.accumulative_counts
        n_params = sum(p.numel() for p in self.unwrapped_model.parameters())
        n_train = sum(p.numel() for p in self.unwrapped_model.parameters() if p.requires_grad)
        precision = self.precision
        if precision != acc.mixed_precision:
            precision = f"{precision} ({acc.mixed_precision} requested: not available on {acc.device.type})"
        loop = self.train_loop
        iterations = f"{loop.max_iters} (starting at {start_iter})"
        if hasattr(loop, "iters_per_epoch"):
            iterations += f" = {loop.max_epochs} epochs x {loop.iters_per_epoch}"
        lines = {
            "config": self.config_path or "(dict)",
            "work dir": self.work_dir,
            "processes": f"{acc.num_processes} ({acc.distributed_type.value})",
            "device": acc.device,
            "mixed precision": precision,
            "batch": f"{batch} per process x {acc.num_processes} processes x {self.accumulative_counts} "
            f"accumulation = {total} per iteration",
            "iterations": iterations,
            "train / val samples": f"{_num_samples(train_dataset)} / {_num_samples(val_dataset)}",
            "parameters": f"{n_params / 1e6:.2f} M ({n_train / 1e6:.2f} M trainable)",
            "seed": self.seed,
        }
        if self.clip_grad:
            lines["clip grad"] = self.clip_grad
        if self.skip_nonfinite:
            lines["non-finite steps"] = "skipped (optim_wrapper.skip_nonfinite)"
        if self._resumed_from is not None:
            lines["resumed from"] = self._resumed_from
        elif self.cfg.get("load_from"):
            lines["load from"] = self.cfg["load_from"]
        if self.cfg.get("report_to"):
            lines["trackers"] = self.cfg["report_to"]
        logger.info("segaccel training" + banner(lines))


def adapt_sync_batchnorm(model: nn.Module, accelerator: Accelerator) -> nn.Module:
    """SyncBN only with several processes on CUDA; plain BN otherwise (SyncBN fails on CPU)."""
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return revert_sync_batchnorm(model)


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every `nn.SyncBatchNorm` by an `nn.BatchNorm2d` with the same state."""
    out = module
    if isinstance(module, nn.SyncBatchNorm):
        out = nn.BatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        out.load_state_dict(module.state_dict())
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, revert_sync_batchnorm(child))
    return out


def load_weights(model: Segmentor, path: str | os.PathLike, strict: bool = False) -> None:
    """Load weights from a file, a model or checkpoint folder, or a Hub model id (`org/name[@rev]`).

    `load_from` (strict=False) loads every matching weight and re-initialises a classifier whose
    class count differs; `--checkpoint` (strict=True) requires an exact match. The reading (and the
    conversion of transformers SegFormer and MMSegmentation weights) is
    `segaccel.models.segmentor.load_pretrained_weights`; pickles only with `weights_only=True`.
    """
    resolve_weights_file(path)  # a clear error when nothing is there (also fetches a Hub file once)
    source, _, revision = (str(path), "", "") if Path(path).exists() else str(path).partition("@")
    load_pretrained_weights(model, source, strict=strict, revision=revision or None)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def resolve_weights_file(path: str | os.PathLike) -> Path:
    """A local weights file for `path`: a file, a folder holding `model.safetensors`, or a Hub id.

    A Hub id (`org/name`, optionally `org/name@revision`) that is not a local path is resolved with
    `huggingface_hub.hf_hub_download` of its `model.safetensors` (so the HF cache, `HF_HUB_OFFLINE`
    and `HF_TOKEN` apply).
    """
    local = Path(path)
    if local.exists():
        file = local / "model.safetensors" if local.is_dir() else local
        if not file.is_file():
            raise FileNotFoundError(
                f"no weights at {local} (expected a model.safetensors file or a folder holding one)"
            )
        return file
    text = str(path)
    if not _HUB_ID.match(text) or text.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"no weights at {text}: no such file or folder, and not a Hub model id (org/name)"
        )
    from huggingface_hub import hf_hub_download

    repo_id, _, revision = text.partition("@")
    try:
        return Path(hf_hub_download(repo_id, "model.safetensors", revision=revision or None))
    except Exception as err:
        raise FileNotFoundError(
            f"no weights at {text}: not a local file or folder, and the Hub model {repo_id!r} has no "
            f"model.safetensors that could be fetched ({type(err).__name__}: {err})"
        ) from err


def config_digest(cfg: dict[str, Any]) -> str:
    """A short hash of the parts of a config that change what training computes."""
    keep = {
        k: cfg.get(k)
        for k in ("model", "train_dataloader", "optim_wrapper", "param_scheduler", "train_cfg", "seed")
    }
    return hashlib.sha256(json.dumps(to_plain(keep), sort_keys=True, default=str).encode()).hexdigest()[:16]


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

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handler)
    if inner is not None:
        inner(worker_id)


def _offline_hint() -> str:
    """Why a Hub dataset may be missing when offline mode is on."""
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return " (offline mode, HF_HUB_OFFLINE=1: only datasets already in the local cache can be loaded)"
    return ""


def _has_gpu() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())


def effective_precision(accelerator: Accelerator) -> str:
    """The precision training really runs in: Accelerate keeps `fp16` on a CPU but never applies it."""
    requested = accelerator.mixed_precision
    if requested == "fp16" and accelerator.device.type == "cpu" and accelerator.scaler is None:
        return "no"
    return requested


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


_NOT_COMPARED_ON_RESUME = ("work_dir", "resume")


def config_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """`key: old -> new` lines for every dotted key whose value differs (work_dir, resume ignored)."""
    if old is None:
        return []
    a = {k: v for k, v in _flat_config(to_plain(old), keep_lists=True).items()}
    b = {k: v for k, v in _flat_config(to_plain(new), keep_lists=True).items()}
    changes = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in _NOT_COMPARED_ON_RESUME:
            continue
        if key not in a:
            changes.append(f"{key}: (absent) -> {b[key]!r}")
        elif key not in b:
            changes.append(f"{key}: {a[key]!r} -> (absent)")
        elif a[key] != b[key]:
            changes.append(f"{key}: {a[key]!r} -> {b[key]!r}")
    return changes


def _num_samples(dataset: Any) -> str:
    if dataset is None:
        return "0"
    try:
        return str(len(dataset))
    except TypeError:  # a streamed dataset
        return "streamed"


def _flat_config(cfg: dict[str, Any], prefix: str = "", keep_lists: bool = False) -> dict[str, Any]:
    """Dotted keys to scalars (lists as strings, or kept with `keep_lists`), for trackers and diffs."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat_config(v, key + ".", keep_lists))
        elif isinstance(v, (int, float, str, bool)) or v is None or (keep_lists and isinstance(v, list)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def _command_line() -> str | None:
    """The command that runs this process (`python scripts/train.py ...`), when it is a script."""
    import shlex
    import sys

    if not sys.argv or not sys.argv[0].endswith(".py"):
        return None
    script = os.path.relpath(sys.argv[0]) if os.path.isabs(sys.argv[0]) else sys.argv[0]
    return " ".join(["python", shlex.quote(script), *(shlex.quote(a) for a in sys.argv[1:])])
