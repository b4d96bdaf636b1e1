"""Devices, processes and precision: the run's `Accelerator`, SyncBN where it works.

All device, process, precision and state handling goes through Accelerate.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from torch import nn

from segaccel.engine.logging import logger


def make_accelerator(
    work_dir: Path, mixed_precision: str | None, report_to: str | list | None
) -> Accelerator:
    """The run's Accelerator: project and logging folders in `work_dir`, trackers `report_to`.

    Several processes launched on a machine without a GPU (`accelerate launch --multi_gpu`,
    torchrun) run on gloo; a launch that Accelerate does not join up is an error, not N separate
    runs.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(project_dir=str(work_dir), logging_dir=str(work_dir / "logs")),
        # Accelerate sets up gloo only when told it runs on the CPU, else each process runs alone.
        cpu=launched > 1 and not has_gpu(),
    )
    if launched > 1 and accelerator.num_processes != launched:
        raise RuntimeError(
            f"{launched} processes were launched (WORLD_SIZE) but Accelerate set up "
            f"{accelerator.num_processes}: each would train on its own"
        )
    return accelerator


def warn_if_precision_unavailable(accelerator: Accelerator) -> str:
    """The precision training really runs in (`effective_precision`); warns when it is not the one asked."""
    precision = effective_precision(accelerator)
    if precision != accelerator.mixed_precision:
        logger.warning(
            f"mixed precision {accelerator.mixed_precision} was requested, but Accelerate runs "
            f"fp16 only on GPUs: this run on {accelerator.device} trains in full fp32 precision. "
            "Use --mixed_precision bf16 for autocast on a CPU, or --mixed_precision no to silence this."
        )
    return precision


def effective_precision(accelerator: Accelerator) -> str:
    """The precision training really runs in: Accelerate keeps `fp16` on a CPU but never applies it."""
    requested = accelerator.mixed_precision
    if requested == "fp16" and accelerator.device.type == "cpu" and accelerator.scaler is None:
        return "no"
    return requested


def has_gpu() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())


def adapt_sync_batchnorm(model: nn.Module, accelerator: Accelerator) -> nn.Module:
    """SyncBN only with several processes on CUDA; plain BN otherwise (SyncBN fails on CPU)."""
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return revert_sync_batchnorm(model)


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every `nn.SyncBatchNorm` by an `nn.BatchNorm2d` with the same state.

    The new layer takes over the old one's parameters and buffers themselves (as torch's
    `convert_sync_batchnorm` does the other way), so what was frozen stays frozen
    (`requires_grad=False`: a frozen backbone, `norm_cfg.requires_grad: false`), its training/eval
    mode is kept, and an optimizer or a weight tie made before still points at them.
    """
    out = module
    if isinstance(module, nn.SyncBatchNorm):
        out = nn.BatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        for name, buf in module.named_buffers(recurse=False):
            setattr(out, name, buf)
        out.train(module.training)
        if hasattr(module, "qconfig"):
            out.qconfig = module.qconfig
    for name, child in module.named_children():
        out.add_module(name, revert_sync_batchnorm(child))
    return out
