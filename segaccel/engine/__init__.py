"""Training engine on Accelerate: loops, optimizers, schedules, checkpoints, logging."""

import torch

from segaccel.engine.loops import IterBasedTrainLoop, TestLoop, ValLoop
from segaccel.engine.schedulers import CosineAnnealingLR, LinearLR, MultiStepLR, PolyLR, StepLR
from segaccel.registry import LOOPS, OPTIMIZERS, SCHEDULERS

LOOPS.register(IterBasedTrainLoop, ValLoop, TestLoop)
OPTIMIZERS.register(torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD)
SCHEDULERS.register(LinearLR, PolyLR, CosineAnnealingLR, StepLR, MultiStepLR)

__all__ = [
    "IterBasedTrainLoop",
    "ValLoop",
    "TestLoop",
    "LinearLR",
    "PolyLR",
    "CosineAnnealingLR",
    "StepLR",
    "MultiStepLR",
]
