"""`Compose`: a pipeline of transforms built from config dicts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from segaccel.data.transforms.formatting import PackSegInputs
from segaccel.data.transforms.loading import Results
from segaccel.registry import TRANSFORMS, ConfigError


class Compose:
    """Apply transforms in order; config dicts are built through TRANSFORMS.

    All transforms share the one per-sample `rng`. A transform returning None stops the pipeline
    and Compose returns None (as mmcv). Transforms left to the device (`on_device: true`) must come
    last, before `PackSegInputs` only: they are applied after everything the CPU does.
    """

    def __init__(self, transforms: Sequence[dict | Callable] | None, key: str = "pipeline") -> None:
        self.transforms: list[Callable] = []
        for i, t in enumerate(transforms or []):
            if isinstance(t, dict):
                t = TRANSFORMS.build(t, key=f"{key}.{i}")
            elif not callable(t):
                raise ConfigError(f"{key}.{i}: expected a transform config dict or a callable, got {t!r}")
            self.transforms.append(t)
        deferred = [i for i, t in enumerate(self.transforms) if getattr(t, "on_device", False)]
        first = deferred[0] if deferred else len(self.transforms)
        for i in range(first, len(self.transforms)):
            t = self.transforms[i]
            if not getattr(t, "on_device", False) and not isinstance(t, PackSegInputs):
                raise ConfigError(
                    f"{key}.{i}: {type(t).__name__} comes after {type(self.transforms[first]).__name__} with "
                    f"on_device: true ({key}.{first}), which the model's data preprocessor applies after the "
                    "whole pipeline; put the on_device transforms last, just before PackSegInputs"
                )

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results | None:
        for t in self.transforms:
            results = t(results, rng=rng)
            if results is None:
                return None
        return results

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"
