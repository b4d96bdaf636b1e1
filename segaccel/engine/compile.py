"""`compile:` in a config: `torch.compile` of the model, for training and for evaluation.

```yaml
compile: true                      # torch.compile, mode "default" (inductor)
compile: max-autotune              # a mode (default, reduce-overhead, max-autotune, ...)
compile: {mode: default, backend: inductor, dynamic: null, fullgraph: false}
```

The model is compiled in place (`nn.Module.compile`: its state dict, checkpoints and exported folders
keep their names) after Accelerate has prepared it, so under DDP the segmentor inside is compiled and
under FSDP2 the sharded model is (PyTorch's recommended order). Each mode of the segmentor's forward
(`loss` in training, `predict` in validation and tests) is compiled once on first use; the first
iterations are therefore slow. Measured effect: docs/guides/performance.md.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from segaccel.engine.logging import logger
from segaccel.registry import ConfigError

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_KEYS = ("mode", "backend", "dynamic", "fullgraph", "options")


def compile_options(value: Any) -> dict[str, Any] | None:
    """The `torch.compile` keyword arguments a config's `compile:` value asks for; None for off."""
    if value is None or value is False:
        return None
    if value is True:
        value = "default"
    if isinstance(value, str):
        value = {"mode": value}
    if not isinstance(value, dict):
        raise ConfigError(f"compile: expected true/false, a mode name or a mapping, got {value!r}")
    unknown = sorted(set(value) - set(_KEYS))
    if unknown:
        raise ConfigError(f"compile: unknown keys {unknown} (known: {', '.join(_KEYS)})")
    options = dict(value)
    mode = options.setdefault("mode", "default")
    if mode not in MODES:
        raise ConfigError(f"compile.mode: {mode!r} is not one of {', '.join(MODES)}")
    if options.get("backend", "inductor") != "inductor" or options.get("options"):
        options.pop("mode")  # torch.compile takes a mode only for inductor without options
    elif mode == "default":
        options["mode"] = None
    return options


def compile_model(model: nn.Module, value: Any, unwrapped: nn.Module | None = None) -> nn.Module:
    """Compile `unwrapped` (the model inside Accelerate's wrappers; default `model`) in place as
    `value` (a config's `compile:`) says; returns `model`."""
    options = compile_options(value)
    if options is None:
        return model
    target = unwrapped if unwrapped is not None else model
    target.compile(**options)
    logger.info(f"torch.compile of the model: {options} (compiled on first use of each mode)")
    return model
