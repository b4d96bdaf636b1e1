"""The run's DataLoaders, all made by one factory (`build_dataloader`).

Loaders are never prepared by Accelerate: each process reads its own shard (a sampler from
`segaccel.data.samplers`, or a streamed split sharded when it was built) and the model's data
preprocessor moves batches to the device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from segaccel.data import seg_collate
from segaccel.data.loader import resolve_num_workers, worker_init_fn
from segaccel.data.samplers import ShardedEvalSampler
from segaccel.data.streaming import SegStreamDataset, StreamCheckpoint, StreamLoader, stream_collate
from segaccel.engine.logging import logger


def build_dataloader(
    dataset: Any,
    loader_cfg: dict[str, Any],
    *,
    training: bool,
    device: torch.device,
    sampler: Sampler | None = None,
    collate_fn: Callable[[list[Any]], dict[str, Any]] = seg_collate,
) -> DataLoader:
    """A DataLoader as `<split>_dataloader` says: `batch_size` (per process; default 2 for training,
    1 for evaluation) and `num_workers` (a count, or `auto`: `segaccel.data.loader.resolve_num_workers`);
    training loaders keep their workers between epochs and take `prefetch_factor`. Memory is pinned
    for CUDA devices. Workers run OpenCV without threads and torch with one (`worker_init_fn`).
    """
    num_workers = resolve_num_workers(loader_cfg.get("num_workers", 0))  # an int, or "auto"
    keep_workers = training and num_workers > 0
    return DataLoader(
        dataset,
        batch_size=int(loader_cfg.get("batch_size", 2 if training else 1)),
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
        persistent_workers=keep_workers,
        prefetch_factor=loader_cfg.get("prefetch_factor") if keep_workers else None,
        worker_init_fn=worker_init_fn if num_workers > 0 else None,
    )


def eval_dataloader(dataset: Any, loader_cfg: dict[str, Any], accelerator: Any) -> DataLoader:
    """Each process's share of a validation/test split, every sample once (no padding duplicates)."""
    sampler = None
    if not isinstance(dataset, SegStreamDataset):  # a streamed split is sharded already
        sampler = ShardedEvalSampler(len(dataset), accelerator.process_index, accelerator.num_processes)
    return build_dataloader(dataset, loader_cfg, training=False, device=accelerator.device, sampler=sampler)


def stream_train_loader(
    dataset: SegStreamDataset,
    loader_cfg: dict[str, Any],
    checkpoint: StreamCheckpoint,
    start_iter: int,
    device: torch.device,
) -> StreamLoader:
    """Batches of a streamed training split (already sharded by process), tracked for checkpoints.

    From iteration `start_iter > 0` the stream continues where `checkpoint` (restored with the
    training state) left it.
    """
    if start_iter > 0:
        if checkpoint.loaded:
            dataset.resume_from(checkpoint.loaded)
            logger.info(f"the training stream resumes where the checkpoint left it (iteration {start_iter})")
        else:
            logger.warning("the checkpoint holds no stream position: the training stream starts again")
    loader = build_dataloader(dataset, loader_cfg, training=True, device=device, collate_fn=stream_collate)
    return StreamLoader(loader, checkpoint)
