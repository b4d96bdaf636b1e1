"""`Runner`: builds everything a config describes and runs training, validation or testing.

All device, process, precision and state handling goes through Accelerate. Batches are never
dispatched from rank 0: each process reads its own shard (`segaccel.data.samplers`) and the
model's data preprocessor moves it to the device.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

import segaccel.evaluation  # noqa: F401  (registers the metrics)
from segaccel.config import dump_config, get_path, to_plain
from segaccel.data import build_dataset, dataset_id2label, seg_collate
from segaccel.data.samplers import InfiniteSampler, ShardedEvalSampler
from segaccel.engine.checkpoint import latest_checkpoint, read_checkpoint_state, save_checkpoint
from segaccel.engine.logging import ScalarLogger, banner, logger, setup_logging
from segaccel.engine.loops import IterBasedTrainLoop, TestLoop, ValLoop
from segaccel.engine.optim import build_optimizer
from segaccel.engine.schedulers import build_lr_scheduler
from segaccel.models import Segmentor
from segaccel.registry import LOOPS, METRICS, MODELS, ConfigError
from segaccel.visualization import get_palette, make_comparison


class Runner:
    """Train/validate/test a segmentor from a resolved config dict.

    Args:
        cfg: the resolved config (after `_base_` and overrides).
        work_dir: output folder; default `cfg["work_dir"]` or `work_dirs/<config name>`.
        config_path: the config file (names the default work dir, shown in the banner).
        resume: `True` for the latest complete checkpoint in `WORK_DIR/checkpoints`, or a path.
        mixed_precision: `no`/`fp16`/`bf16`; default the config's, else Accelerate's launch setting.
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
        self.resume = resume
        report_to = self.cfg.get("report_to") or None
        self.accelerator = Accelerator(
            mixed_precision=mixed_precision or self.cfg.get("mixed_precision") or None,
            log_with=report_to,
            project_dir=str(self.work_dir),
        )
        setup_logging(self.work_dir / "logs" / "train.log", self.accelerator.is_main_process)
        self.seed = int(self.cfg.get("seed", 0))
        set_seed(self.seed)

        hooks = self.cfg.get("default_hooks") or {}
        self.log_interval = int(get_path(hooks, "logger.interval", 50))
        self.ckpt_interval = int(get_path(hooks, "checkpoint.interval", -1) or -1)
        self.max_keep_ckpts = int(get_path(hooks, "checkpoint.max_keep_ckpts", -1) or -1)
        self.save_best = get_path(hooks, "checkpoint.save_best", None)
        self.vis_num_samples = int(get_path(hooks, "visualization.num_samples", 4) or 0)
        optim_cfg = self.cfg.get("optim_wrapper") or {}
        self.accumulative_counts = int(optim_cfg.get("accumulative_counts", 1))
        self.clip_grad = optim_cfg.get("clip_grad") or None

        self.model: nn.Module | None = None
        self.optimizer = None
        self.lr_scheduler = None
        self.train_loop: IterBasedTrainLoop | None = None
        self.val_loop: ValLoop | None = None
        self.best: dict[str, Any] = {}
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
        """The `SegDataset` of `<loader_key>.dataset` (the main process prepares data first)."""
        dataset_cfg = self._dataset_cfg(loader_key)
        split = dataset_cfg.pop("split", "train" if loader_key.startswith("train") else "validation")
        num_classes = get_path(self.cfg, "model.decode_head.num_classes")
        with self.accelerator.main_process_first():
            dataset = build_dataset(dataset_cfg, split, seed=self.seed, num_classes=num_classes)
        if self._id2label is None:
            self._id2label = dataset_id2label(dataset_cfg, dataset.hf_dataset)
        if len(dataset) == 0:
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

    def build_model(self) -> Segmentor:
        model = MODELS.build(self.model_config(), key="model")
        model = adapt_sync_batchnorm(model, self.accelerator)
        load_from = self.cfg.get("load_from")
        if load_from:
            load_weights(model, load_from)
        return model

    def _train_dataloader(self, dataset, start_iter: int) -> DataLoader:
        loader_cfg = self.cfg.get("train_dataloader") or {}
        batch_size = int(loader_cfg.get("batch_size", 2))
        num_workers = int(loader_cfg.get("num_workers", 0))
        sampler = InfiniteSampler(
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

    def _eval_dataloader(self, loader_key: str, dataset) -> DataLoader:
        loader_cfg = self.cfg.get(loader_key) or {}
        num_workers = int(loader_cfg.get("num_workers", 0))
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
        """Train as `train_cfg` says; returns the last validation metrics."""
        acc = self.accelerator
        cfg = self.cfg
        train_cfg = copy.deepcopy(cfg.get("train_cfg") or {})
        loop_type = train_cfg.pop("type", "IterBasedTrainLoop")
        train_dataset = self.build_dataset("train_dataloader")
        val_dataset = self.build_dataset("val_dataloader") if cfg.get("val_dataloader") else None

        self.model = self.build_model()
        self.optimizer = build_optimizer(self.model, cfg.get("optim_wrapper") or {})
        self.train_loop = LOOPS.build({"type": loop_type, **train_cfg}, key="train_cfg", runner=self)
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

        start_iter = self._maybe_resume()
        self.train_loop.iter = start_iter
        if acc.is_main_process:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, self.work_dir / "config.yaml")
        if report_to := cfg.get("report_to"):
            acc.init_trackers(Path(self.work_dir).name, config=_flat_config(cfg))
        self._log_banner(train_dataset, val_dataset, start_iter)

        data_iter = iter(self._train_dataloader(train_dataset, start_iter))
        metrics = self.train_loop.run(data_iter)
        self.export_model(self.work_dir / "model", metrics)
        if report_to:
            acc.end_training()
        return metrics

    def _maybe_resume(self) -> int:
        if not self.resume:
            return 0
        ckpt_root = self.work_dir / "checkpoints"
        path = latest_checkpoint(ckpt_root) if self.resume is True else Path(self.resume)
        if path is None:
            logger.warning(f"--resume: no complete checkpoint in {ckpt_root}; starting from iteration 0")
            return 0
        state = read_checkpoint_state(path)
        self.accelerator.wait_for_everyone()
        self.accelerator.load_state(str(path))
        self.best = state.get("best", {})
        if state.get("config_digest") not in (None, config_digest(self.cfg)):
            logger.warning("resuming with a config that differs from the checkpoint's config")
        logger.info(f"resumed from {path} at iteration {state['iteration']}")
        return int(state["iteration"])

    def after_train_iter(self, iteration: int, metrics: dict[str, float] | None) -> None:
        """Checkpoint at the interval and at the end; keep the best model by `save_best`."""
        if metrics and self.save_best:
            self._update_best(iteration, metrics)
        last = iteration == self.train_loop.max_iters
        if last or (self.ckpt_interval > 0 and iteration % self.ckpt_interval == 0):
            state = {"best": self.best, "config_digest": config_digest(self.cfg)}
            path = save_checkpoint(
                self.accelerator,
                self.work_dir / "checkpoints",
                iteration,
                state,
                max_keep=self.max_keep_ckpts,
            )
            if self.accelerator.is_main_process:
                logger.info(f"saved checkpoint {path}")

    def _update_best(self, iteration: int, metrics: dict[str, float]) -> None:
        key = self.save_best if self.save_best != "auto" else "mIoU"
        value = metrics.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        if self.best.get("value") is None or value > self.best["value"]:
            self.best = {"metric": key, "value": value, "iteration": iteration}
            self.export_model(self.work_dir / "best_model", metrics)
            if self.accelerator.is_main_process:
                logger.info(f"new best {key} = {value:.2f} at iteration {iteration}")

    def export_model(self, out_dir: Path, metrics: dict[str, float] | None = None) -> None:
        """`save_pretrained` layout plus the resolved config and the metrics (main process only)."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            model = self.unwrapped_model
            model.save_pretrained(out_dir)
            dump_config(self.cfg, Path(out_dir) / "config.yaml")
            if metrics:
                with open(Path(out_dir) / "metrics.json", "w", encoding="utf-8") as f:
                    json.dump(metrics, f, indent=2)
            logger.info(f"exported model to {out_dir}")
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------------------------------
    # evaluation
    # ------------------------------------------------------------------------------------------
    def test(
        self,
        model: Segmentor | None = None,
        checkpoint: str | None = None,
        loader_key: str = "test_dataloader",
    ) -> dict[str, float]:
        """Evaluate `model` (or the config's model, with `checkpoint` weights) on `loader_key`."""
        if not self.cfg.get(loader_key):
            loader_key = "val_dataloader"
        evaluator_key = "test_evaluator" if loader_key == "test_dataloader" else "val_evaluator"
        dataset = self.build_dataset(loader_key)
        if model is None:
            model = self.build_model()
            if checkpoint:
                load_weights(model, checkpoint, strict=True)
        self.model = self.accelerator.prepare_model(model, evaluation_mode=True)
        loop = TestLoop(self, self._eval_dataloader(loader_key, dataset), self.build_evaluator(evaluator_key))
        metrics = loop.run()
        if self.accelerator.is_main_process:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            with open(self.work_dir / "metrics.json", "w", encoding="utf-8") as f:
                json.dump(metrics, f, indent=2)
            logger.info(f"wrote {self.work_dir / 'metrics.json'}")
        return metrics

    def write_overlays(self, samples: list, iteration: int) -> None:
        """Image | ground truth | prediction PNGs of a few fixed validation samples."""
        dataset = getattr(self, "_val_dataset", None)
        if dataset is None:
            return
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

    def _log_banner(self, train_dataset, val_dataset, start_iter: int) -> None:
        acc = self.accelerator
        if not acc.is_main_process:
            return
        batch = int(get_path(self.cfg, "train_dataloader.batch_size", 2))
        n_params = sum(p.numel() for p in self.unwrapped_model.parameters())
        lines = {
            "config": self.config_path or "(dict)",
            "work dir": self.work_dir,
            "processes": acc.num_processes,
            "device": acc.device,
            "mixed precision": acc.mixed_precision,
            "batch": f"{batch} per process x {acc.num_processes} processes x {self.accumulative_counts} "
            f"accumulation = {batch * acc.num_processes * self.accumulative_counts} per iteration",
            "iterations": f"{self.train_loop.max_iters} (starting at {start_iter})",
            "train / val samples": f"{len(train_dataset)} / {len(val_dataset) if val_dataset else 0}",
            "parameters": f"{n_params / 1e6:.2f} M",
        }
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
    """Load `model.safetensors` weights from a file, a model folder or a checkpoint folder.

    `load_from` (strict=False) loads every matching weight and re-initialises a classifier whose
    class count differs; `--checkpoint` (strict=True) requires an exact match.
    """
    from safetensors.torch import load_file

    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no weights at {path} (expected a model.safetensors file or a folder holding one)"
        )
    if file.suffix != ".safetensors":
        raise ValueError(f"{file}: only .safetensors weights are loaded here (pickled weights are refused)")
    model.load_weights(load_file(str(file)), strict=strict, reinit_heads=not strict, source=str(file))
    logger.info(f"loaded weights from {file}")


def config_digest(cfg: dict[str, Any]) -> str:
    """A short hash of the parts of a config that change what training computes."""
    keep = {
        k: cfg.get(k)
        for k in ("model", "train_dataloader", "optim_wrapper", "param_scheduler", "train_cfg", "seed")
    }
    return hashlib.sha256(json.dumps(to_plain(keep), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flat_config(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_config(v, key + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
        else:
            out[key] = str(v)
    return out
