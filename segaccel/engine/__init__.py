"""Training engine on Accelerate: loops, optimizers, schedules, checkpoints, logging."""

import torch

from segaccel.engine.loops import (
    EpochBasedTrainLoop,
    IterBasedTrainLoop,
    NonFiniteLossError,
    TestLoop,
    TrainingInterrupted,
    ValLoop,
)
from segaccel.engine.schedulers import CosineAnnealingLR, LinearLR, MultiStepLR, PolyLR, StepLR
from segaccel.registry import LOOPS, OPTIMIZERS, SCHEDULERS

LOOPS.register(IterBasedTrainLoop, EpochBasedTrainLoop, ValLoop, TestLoop)
OPTIMIZERS.register(torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD)
SCHEDULERS.register(LinearLR, PolyLR, CosineAnnealingLR, StepLR, MultiStepLR)

__all__ = [
    "IterBasedTrainLoop",
    "EpochBasedTrainLoop",
    "ValLoop",
    "TestLoop",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "LinearLR",
    "PolyLR",
    "CosineAnnealingLR",
    "StepLR",
    "MultiStepLR",
]
