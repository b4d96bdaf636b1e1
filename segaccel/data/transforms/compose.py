"""`Compose`: a pipeline of transforms built from config dicts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from segaccel.data.transforms.loading import Results
from segaccel.registry import TRANSFORMS, ConfigError


class Compose:
    """Apply transforms in order; config dicts are built through TRANSFORMS.

    All transforms share the one per-sample `rng`. A transform returning None stops the pipeline
    and Compose returns None (as mmcv).
    """

    def __init__(self, transforms: Sequence[dict | Callable] | None, key: str = "pipeline") -> None:
        self.transforms: list[Callable] = []
        for i, t in enumerate(transforms or []):
            if isinstance(t, dict):
                t = TRANSFORMS.build(t, key=f"{key}.{i}")
            elif not callable(t):
                raise ConfigError(f"{key}.{i}: expected a transform config dict or a callable, got {t!r}")
            self.transforms.append(t)

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results | None:
        for t in self.transforms:
            results = t(results, rng=rng)
            if results is None:
                return None
        return results

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"
