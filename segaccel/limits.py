"""Limits on the work an input may ask for: config nesting, class counts, image and window sizes.

A `config.json` from the Hub, a training config or an image file is read before anything is
allocated for it, and every value that sizes work is compared with these limits first: a value over
a limit is refused with an error naming the file, the key and the limit (and how to raise it),
instead of a raw allocator error or a run that never ends. The defaults are far above what any
published segmentation model or dataset needs:

| limit                | default        | what it bounds                                                    |
|----------------------|----------------|-------------------------------------------------------------------|
| `max_config_depth`   | 100            | nesting of a YAML or JSON config                                  |
| `max_config_nodes`   | 1 000 000      | values of a YAML config, each alias counted with all it repeats   |
| `max_config_bytes`   | 64 MiB         | size of a JSON file of a model (`config.json`, ...)               |
| `max_num_classes`    | 65 536         | `num_classes` of every head                                       |
| `max_slide_windows`  | 4 096          | slide-inference windows of one image                              |
| `max_image_side`     | 32 768         | each side of a decoded image and of every test-time size          |
| `max_image_pixels`   | 2**26 (8192²)  | pixels of a decoded image and of every test-time size             |

Each can be raised (or lowered) by an environment variable, `SEGACCEL_` + the name in capitals
(`SEGACCEL_MAX_IMAGE_PIXELS=300000000`), which DataLoader workers inherit, or in code:

    with segaccel.limits.override(max_image_pixels=300_000_000):
        ...

This module is on the ground floor: it imports nothing of segaccel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """The limits in force (see the module docstring)."""

    max_config_depth: int = 100
    max_config_nodes: int = 1_000_000
    max_config_bytes: int = 64 * 2**20
    max_num_classes: int = 65_536
    max_slide_windows: int = 4_096
    max_image_side: int = 32_768
    max_image_pixels: int = 2**26

    @staticmethod
    def env_name(name: str) -> str:
        """The environment variable that sets limit `name`: `SEGACCEL_MAX_IMAGE_PIXELS`, ..."""
        return f"SEGACCEL_{name.upper()}"

    def how_to_raise(self, name: str) -> str:
        """The hint an error message ends with."""
        return f"set {self.env_name(name)} (or segaccel.limits.override({name}=...)) to allow more"


_overrides: dict[str, int] = {}


def get_limits() -> Limits:
    """The limits in force: the defaults, then the environment, then `override` (innermost wins)."""
    values: dict[str, int] = {}
    for field in dataclasses.fields(Limits):
        text = os.environ.get(Limits.env_name(field.name))
        if text is not None and text.strip():
            try:
                values[field.name] = int(float(text))
            except ValueError:
                raise ValueError(f"{Limits.env_name(field.name)}={text!r}: expected a whole number") from None
            if values[field.name] < 1:
                raise ValueError(f"{Limits.env_name(field.name)}={text!r}: expected a positive number")
    values.update(_overrides)
    return Limits(**values)


@contextlib.contextmanager
def override(**limits: int) -> Iterator[Limits]:
    """Change limits for the code inside the `with` block (this process only); yields them."""
    names = {f.name for f in dataclasses.fields(Limits)}
    unknown = sorted(set(limits) - names)
    if unknown:
        raise TypeError(f"unknown limit(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    for name, value in limits.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    saved = dict(_overrides)
    _overrides.update(limits)
    try:
        yield get_limits()
    finally:
        _overrides.clear()
        _overrides.update(saved)


def check_image_size(height: int, width: int, what: str, error: type[Exception] = ValueError) -> None:
    """Raise `error` when a `height` x `width` image is over `max_image_side` or `max_image_pixels`.

    `what` starts the message ("the image", "model.data_preprocessor.size", ...).
    """
    lim = get_limits()
    if max(height, width) > lim.max_image_side:
        raise error(
            f"{what} is {height}x{width} (h x w): a side over the limit of {lim.max_image_side} pixels; "
            + lim.how_to_raise("max_image_side")
        )
    if height * width > lim.max_image_pixels:
        raise error(
            f"{what} is {height}x{width} (h x w) = {height * width} pixels, over the limit of "
            f"{lim.max_image_pixels}; " + lim.how_to_raise("max_image_pixels")
        )
