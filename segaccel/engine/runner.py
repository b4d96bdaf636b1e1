"""`Runner`: builds what a config describes; the loops run it.

The Runner builds the datasets, their loaders (`engine.dataloaders`), the model, optimizer, LR
schedule and evaluator, and the loops. The loops get what they need as a `LoopContext` and call
back through `LoopHooks`, which the Runner implements (checkpoints, the best model, stop requests,
overlays); they never see the Runner (`engine.loop_context`).

State: checkpoints (`accelerator.save_state`, written atomically by `engine.checkpoint`) hold the
model, optimizer, LR schedule position, grad scaler and every process's RNG states; the position in
the data stream is the iteration itself (the training stream is a pure function of the seed), so a
resumed run continues exactly as if it had never stopped. SIGTERM and Ctrl-C stop a run after the
current iteration with a checkpoint (`engine.signals`); a NaN/inf loss stops it after saving the
last good state. Exported model folders are written by `engine.export`, test outputs by
`engine.test_outputs`.
"""

from __future__ import annotations

import copy
import os
import signal
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

import segaccel.evaluation  # noqa: F401  (registers the metrics)
from segaccel.config import dump_config, get_path
from segaccel.data.samplers import InfiniteSampler
from segaccel.data.streaming import SegStreamDataset, StreamCheckpoint, StreamLoader
from segaccel.engine import sharding, test_outputs
from segaccel.engine.build import build_evaluator, build_split, model_config
from segaccel.engine.dataloaders import build_dataloader, eval_dataloader, stream_train_loader
from segaccel.engine.devices import adapt_sync_batchnorm, make_accelerator, warn_if_precision_unavailable
from segaccel.engine.eval_loops import TestLoop, ValLoop
from segaccel.engine.export import check_output_destinations, export_model_folder, push_model_folder
from segaccel.engine.logging import ScalarLogger, flat_config, logger, setup_logging, training_banner
from segaccel.engine.loop_context import LoopContext, TrainingInterrupted, loop_settings
from segaccel.engine.loops import IterBasedTrainLoop
from segaccel.engine.optim import build_optimizer
from segaccel.engine.overlays import log_overlays_to_trackers, write_val_overlays
from segaccel.engine.resume_config import resume_command
from segaccel.engine.runner_state import RunnerStateHooks
from segaccel.engine.schedulers import build_lr_scheduler
from segaccel.engine.signals import StopSignals
from segaccel.models import Segmentor
from segaccel.models.weights import load_weights
from segaccel.registry import LOOPS, MODELS, ConfigError
from segaccel.visualization import get_palette


class Runner(RunnerStateHooks):
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
        precision = mixed_precision or self.cfg.get("mixed_precision") or None
        self.accelerator = make_accelerator(self.work_dir, precision, report_to)
        setup_logging(self.work_dir / "logs" / "train.log", self.accelerator.is_main_process)
        self.precision = warn_if_precision_unavailable(self.accelerator)
        self.seed = int(self.cfg.get("seed", 0))
        set_seed(self.seed)

        hooks = self.cfg.get("default_hooks") or {}
        self.ckpt_interval = int(get_path(hooks, "checkpoint.interval", -1) or -1)
        self.max_keep_ckpts = int(get_path(hooks, "checkpoint.max_keep_ckpts", -1) or -1)
        self.save_best = get_path(hooks, "checkpoint.save_best", None)
        settings = loop_settings(self.cfg)
        # What the loops run with; the model, optimizer, schedule and validation loop join it as built.
        self.context = LoopContext(
            self.accelerator,
            hooks=self,
            scalar_logger=ScalarLogger(
                self.accelerator,
                self.work_dir / "logs",
                int(get_path(self.cfg, "train_cfg.max_iters", 0) or 0),
                use_trackers=report_to is not None,
            ),
            **settings,
        )
        self.train_loop: IterBasedTrainLoop | None = None
        self.best: dict[str, Any] = {}
        self.signals = StopSignals(announce=self.accelerator.is_main_process)
        self._stop_requested = False
        self._last_saved: tuple[int, Path] | None = None
        self._resumed_from: Path | None = None
        self._id2label: dict[int, str] | None = None
        self._stream_checkpoint: StreamCheckpoint | None = None
        # States saved with each checkpoint beside Accelerate's (segaccel_custom_<i>.pkl, in this order)
        # and restored from the restricted reader's read (engine.checkpoint_files), never unpickled again.
        self._checkpointed: list[Any] = []
        self._val_dataset: Any = None

    # The parts the loops run with live in `self.context` (set there as they are built); these
    # read them.
    @property
    def model(self) -> nn.Module | None:
        return self.context.model

    @property
    def optimizer(self) -> Any:
        return self.context.optimizer

    @property
    def lr_scheduler(self) -> Any:
        return self.context.lr_scheduler

    @property
    def val_loop(self) -> ValLoop | None:
        return self.context.val_loop

    @property
    def train_dataset(self) -> Any:
        return self.context.train_dataset

    @property
    def scalar_logger(self) -> ScalarLogger:
        return self.context.scalar_logger

    @property
    def unwrapped_model(self) -> Segmentor:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------------------------------
    # building
    # ------------------------------------------------------------------------------------------
    def build_dataset(self, loader_key: str) -> Any:
        """The dataset of `<loader_key>.dataset` (`engine.build.build_split`).

        The first one built names the classes; a streamed training split's position is registered
        for checkpointing, so `--resume` continues the stream where it stopped.
        """
        dataset = build_split(self.cfg, loader_key, self.accelerator, self.seed)
        if self._id2label is None:
            self._id2label = dataset.id2label
        if isinstance(dataset, SegStreamDataset) and loader_key.startswith("train"):
            if self._stream_checkpoint is None:
                acc = self.accelerator
                self._stream_checkpoint = StreamCheckpoint(acc.process_index, acc.num_processes)
                self._checkpointed.append(self._stream_checkpoint)
        return dataset

    def model_config(self) -> dict[str, Any]:
        """`cfg.model` completed with what travels in `config.json`: labels, palette, test pipeline."""
        return model_config(self.cfg, self._id2label)

    def build_model(self, use_load_from: bool = True) -> Segmentor:
        """The config's model (SyncBN only where it works), with `load_from` weights if given."""
        try:
            model = MODELS.build(self.model_config(), key="model")
        except ConfigError as exc:  # name the config file too (the key is in the message)
            raise ConfigError(f"{self.config_path}: {exc}") if self.config_path else exc from exc
        model = adapt_sync_batchnorm(model, self.accelerator)
        load_from = self.cfg.get("load_from")
        if load_from and use_load_from:
            try:
                load_weights(model, load_from)
            except FileNotFoundError as exc:  # name the config key that points nowhere
                raise FileNotFoundError(f"load_from: {exc}") from exc
        return model

    def _train_dataloader(self, dataset: Any, start_iter: int) -> DataLoader | StreamLoader:
        """The training batches from iteration `start_iter` on (the train loop's sampler)."""
        loader_cfg = self.cfg.get("train_dataloader") or {}
        acc = self.accelerator
        if isinstance(dataset, SegStreamDataset):
            return stream_train_loader(dataset, loader_cfg, self._stream_checkpoint, start_iter, acc.device)
        make_sampler = self.train_loop.build_sampler if self.train_loop is not None else InfiniteSampler
        sampler = make_sampler(
            len(dataset),
            int(loader_cfg.get("batch_size", 2)),
            seed=self.seed,
            shuffle=loader_cfg.get("shuffle", True),
            rank=acc.process_index,
            world_size=acc.num_processes,
            start_batch=start_iter * self.context.accumulative_counts,
        )
        return build_dataloader(dataset, loader_cfg, training=True, device=acc.device, sampler=sampler)

    def _eval_dataloader(self, loader_key: str, dataset: Any) -> DataLoader:
        return eval_dataloader(dataset, self.cfg.get(loader_key) or {}, self.accelerator)

    def build_evaluator(self, key: str) -> Any:
        return build_evaluator(self.cfg, key, self.unwrapped_model)

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
        ctx = self.context
        train_cfg = copy.deepcopy(cfg.get("train_cfg") or {})
        loop_type = train_cfg.pop("type", "IterBasedTrainLoop")
        check_output_destinations(self.work_dir, best_model=bool(self.save_best))  # now, not after the run
        train_dataset = ctx.train_dataset = self.build_dataset("train_dataloader")
        val_dataset = self.build_dataset("val_dataloader") if cfg.get("val_dataloader") else None

        resume_from = self._resume_path()
        if resume_from is not None and cfg.get("load_from"):
            logger.info(f"load_from is not used: the weights come from the checkpoint {resume_from}")
        ctx.model = sharding.shard_if_requested(self.build_model(use_load_from=resume_from is None), acc)
        ctx.optimizer = build_optimizer(ctx.model, cfg.get("optim_wrapper") or {})
        self.train_loop = LOOPS.build({"type": loop_type, **train_cfg}, key="train_cfg", context=ctx)
        ctx.max_iters = ctx.scalar_logger.max_iters = self.train_loop.max_iters
        ctx.lr_scheduler = build_lr_scheduler(ctx.optimizer, cfg.get("param_scheduler"), ctx.max_iters)
        ctx.model, ctx.optimizer = sharding.prepare_for_training(acc, ctx.model, ctx.optimizer, cfg)
        self._checkpointed.append(ctx.lr_scheduler)
        if val_dataset is not None:
            loader = self._eval_dataloader("val_dataloader", val_dataset)
            ctx.val_loop = ValLoop(ctx, loader, self.build_evaluator("val_evaluator"))
            self._val_dataset = val_dataset

        start_iter = self._load_checkpoint(resume_from) if resume_from is not None else 0
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
            acc.init_trackers(Path(self.work_dir).name, config=flat_config(cfg))
        self._log_banner(train_dataset, val_dataset, start_iter)

        try:
            with self.signals.handling():
                loader = self._train_dataloader(train_dataset, start_iter)
                # A SIGTERM/Ctrl-C sent to the whole process group (torchrun passes one on that way)
                # also reaches DataLoader workers: while training, they ignore it and keep serving
                # batches until the checkpoint is written.
                for dl in (getattr(loader, "loader", loader), getattr(ctx.val_loop, "dataloader", None)):
                    self.signals.shield(dl)
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
    # stopping, overlays (the loops' other hooks: checkpoints, the best model and stop requests
    # are `RunnerStateHooks`, engine.runner_state)
    # ------------------------------------------------------------------------------------------
    def on_stop(self, iteration: int) -> TrainingInterrupted:
        """Save a checkpoint after a stop request; the error to raise, with how to resume."""
        path = self.save_checkpoint(iteration)
        signum = self.signals.signum
        how = signal.Signals(signum).name if signum is not None else "a stop request"
        msg = (
            f"training stopped by {how} at iteration {iteration}/{self.train_loop.max_iters}; checkpoint "
            f"saved to {path}. Resume it (the run's config comes back from the checkpoint) with:\n  "
            f"{resume_command(self.config_path, self.work_dir)}"
        )
        if self.accelerator.is_main_process:
            logger.warning(msg)
        return TrainingInterrupted(msg, iteration, path, signum)

    def write_overlays(self, samples: list, iteration: int) -> None:
        """Image | ground truth | prediction PNGs of a few fixed validation samples, also to trackers."""
        folder = self.work_dir / "vis" / f"iter_{iteration}"
        processes = self.accelerator.num_processes
        write_val_overlays(samples, self._val_dataset, self.unwrapped_model, folder, processes)
        log_overlays_to_trackers(self.accelerator, folder, iteration)

    # ------------------------------------------------------------------------------------------
    # exported models
    # ------------------------------------------------------------------------------------------
    def export_model(self, out_dir: Path, metrics: dict[str, float] | None = None) -> None:
        """Write the model folder `out_dir` (main process; `engine.export.export_model_folder`), with
        `metrics` and the last validation's per-class figures in its `metrics.json`."""
        self.accelerator.wait_for_everyone()
        main = self.accelerator.is_main_process  # a sharded model's full weights are gathered there
        model = sharding.exportable_model(self.unwrapped_model, lambda: self.build_model(False), main)
        if main:
            evaluator = getattr(self.val_loop, "evaluator", None)
            per_class = getattr(evaluator, "per_class", None)
            table = test_outputs.per_class_table(per_class, evaluator.class_names) if per_class else None
            iteration = self.train_loop.iter if self.train_loop is not None else 0
            export_model_folder(out_dir, model, self.cfg, metrics, table, iteration)
        self.accelerator.wait_for_everyone()

    def publish_model(self, metrics: dict[str, float] | None = None) -> None:
        """Push `WORK_DIR/model` when `push_to_hub: true` (main process only; `hub_model_id`,
        default the work dir's name; `hub_private: true` for a private repo)."""
        if self.accelerator.is_main_process and self.cfg.get("push_to_hub"):
            push_model_folder(self.work_dir / "model", self.cfg, self.work_dir, self.train_loop.max_iters)
        self.accelerator.wait_for_everyone()

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
        self.context.model = sharding.prepare_for_evaluation(acc, model, self.cfg)
        evaluator = self.build_evaluator(evaluator_key)
        palette = segmentor.palette or get_palette(segmentor.num_classes)
        writers = test_outputs.make_writers(
            dataset, palette, evaluator.class_names, out_dir, show_dir, original_ids=original_ids
        )
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
        metrics = TestLoop(self.context, loader, evaluator, writers=writers).run()
        if acc.is_main_process:
            test_outputs.write_test_results(self.work_dir, metrics, evaluator, writers, confusion_matrix)
        acc.wait_for_everyone()
        return metrics

    def _log_banner(self, train_dataset: Any, val_dataset: Any, start_iter: int) -> None:
        if not self.accelerator.is_main_process:
            return
        origin = None
        if self._resumed_from is not None:
            origin = ("resumed from", self._resumed_from)
        elif self.cfg.get("load_from"):
            origin = ("load from", self.cfg["load_from"])
        text = training_banner(
            self.context,
            self.train_loop,
            precision=self.precision,
            start_iter=start_iter,
            config=self.config_path,
            work_dir=self.work_dir,
            datasets=(train_dataset, val_dataset),
            seed=self.seed,
            origin=origin,
            trackers=self.cfg.get("report_to"),
        )
        logger.info(text)
