"""Argument checks shared by the transforms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def require_rng(rng: np.random.Generator | None, name: str) -> np.random.Generator:
    if rng is None:
        raise ValueError(
            f"{name} is a random transform and must be called with rng=np.random.Generator "
            "(SegDataset seeds one per sample from (seed, epoch, index)); got rng=None"
        )
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def as_pair(value: Any, name: str, what: str) -> tuple[int, int]:
    """`value` as a pair of positive ints (an int means the same for both)."""
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    if not (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) for v in value)
    ):
        raise ValueError(f"{name}: {what} must be an int or a pair of ints, got {value!r}")
    if min(value) <= 0:
        raise ValueError(f"{name}: {what} must be positive, got {value!r}")
    return int(value[0]), int(value[1])
