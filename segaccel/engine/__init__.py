"""Training engine on Accelerate: loops, optimizers, schedules, checkpoints, logging."""

import torch

from segaccel.engine.eval_loops import TestLoop, ValLoop
from segaccel.engine.loop_context import LoopContext, LoopHooks, NonFiniteLossError, TrainingInterrupted
from segaccel.engine.loops import EpochBasedTrainLoop, IterBasedTrainLoop
from segaccel.engine.schedulers import (
    CosineAnnealingLR,
    LinearLR,
    MultiStepLR,
    PolyLR,
    StepLR,
    TwoStageWarmupPolyLR,
)
from segaccel.registry import LOOPS, OPTIMIZERS, SCHEDULERS

LOOPS.register(IterBasedTrainLoop, EpochBasedTrainLoop, ValLoop, TestLoop)
OPTIMIZERS.register(torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD)
SCHEDULERS.register(LinearLR, PolyLR, CosineAnnealingLR, StepLR, MultiStepLR)
SCHEDULERS.register(TwoStageWarmupPolyLR)

__all__ = [
    "IterBasedTrainLoop",
    "EpochBasedTrainLoop",
    "ValLoop",
    "TestLoop",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "LoopContext",
    "LoopHooks",
    "LinearLR",
    "PolyLR",
    "CosineAnnealingLR",
    "StepLR",
    "MultiStepLR",
]
