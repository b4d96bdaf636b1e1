"""Name → class tables. The only way a `type:` name in a config becomes a class.

Nothing is ever imported from a string: a name resolves only if segaccel registered it. Each
subpackage registers its classes explicitly in its `__init__.py`, so one screen lists them all.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Callable
from typing import Any


class ConfigError(ValueError):
    """A config that cannot be built; the message names the config key."""


class Registry:
    """Maps `type` names to classes (or factory functions) of one kind."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._table: dict[str, Callable[..., Any]] = {}

    def register(self, *objs: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
        """Register classes under their `__name__` (or one under `name`). Returns the last one."""
        if name is not None and len(objs) != 1:
            raise ValueError("`name=` registers exactly one object")
        for obj in objs:
            key = name or obj.__name__
            if key in self._table and self._table[key] is not obj:
                raise KeyError(f"{key!r} is already registered in the {self.name} registry")
            self._table[key] = obj
        return objs[-1]

    def get(self, name: str, key: str = "type") -> Callable[..., Any]:
        """The object registered as `name`; a clear error listing the closest names otherwise."""
        if not isinstance(name, str):
            raise ConfigError(f"{key}: `type` must be a string naming a registered {self.name}, got {name!r}")
        if name not in self._table:
            close = difflib.get_close_matches(name, list(self._table), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"{key}: unknown {self.name} type {name!r}.{hint} "
                f"Registered {self.name} types: {', '.join(sorted(self._table))}"
            )
        return self._table[name]

    def build(self, cfg: dict[str, Any], key: str = "type", **defaults: Any) -> Any:
        """Build `cfg["type"]` with the remaining keys as keyword arguments.

        `defaults` fill arguments the config does not give. `key` is the config path used in
        error messages (e.g. `model.decode_head`).
        """
        if not isinstance(cfg, dict):
            raise ConfigError(f"{key}: expected a mapping with a `type` key, got {type(cfg).__name__}")
        if "type" not in cfg:
            raise ConfigError(f"{key}: missing `type` (one of {', '.join(sorted(self._table))})")
        args = copy.deepcopy(cfg)
        obj = self.get(args.pop("type"), key=f"{key}.type")
        for k, v in defaults.items():
            args.setdefault(k, v)
        try:
            inspect.signature(obj).bind(**args)
        except TypeError as exc:
            raise ConfigError(f"{key}: wrong arguments for {cfg['type']}: {exc}") from exc
        except ValueError:  # no signature available (some builtins): let the call report
            pass
        try:
            return obj(**args)
        except ConfigError:  # a nested build names its own key
            raise
        except TypeError as exc:  # an argument passed on through **kwargs that nothing below takes
            if "unexpected keyword argument" in str(exc) or "required positional argument" in str(exc):
                raise ConfigError(f"{key}: wrong arguments for {cfg['type']}: {exc}") from exc
            raise
        except ValueError as exc:  # a value the constructor refuses: say which config key holds it
            message = str(exc) if str(exc).startswith(str(cfg["type"])) else f"{cfg['type']}: {exc}"
            raise ConfigError(f"{key}: {message}") from exc

    def __contains__(self, name: str) -> bool:
        return name in self._table

    def __iter__(self):
        return iter(self._table)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {sorted(self._table)})"


MODELS = Registry("model")  # segmentors, backbones, necks, heads, losses, data preprocessors
TRANSFORMS = Registry("transform")
METRICS = Registry("metric")
OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("param scheduler")
LOOPS = Registry("loop")
