"""YAML configs: `_base_` inheritance, dotted command-line overrides, dumping.

A config is a plain nested `dict`. `_base_: [a.yaml, b.yaml]` (paths relative to the file) is
loaded first, in order, and the file's own keys are merged on top: dicts merge key by key, any
other value (lists included) replaces. Overrides such as `train_cfg.max_iters=200` are parsed as
YAML scalars and applied last.

YAML is read with `yaml.SafeLoader` (no tags that build objects), after a check of its events:
nesting deeper than `max_config_depth` or more values than `max_config_nodes` (an alias counted with
everything it repeats, so an "alias bomb" is refused before it expands) is a `ConfigError` naming the
file (`segaccel.limits`). `load_json_file` reads a model's JSON files with the same depth limit.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from segaccel.file_modes import umask_mode
from segaccel.limits import get_limits
from segaccel.registry import ConfigError

BASE_KEY = "_base_"


class _YamlLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also reads `6e-5` as a float (YAML 1.1 only knows `6.0e-5`)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A new dict: `update` merged into `base` recursively (dicts key by key, others replaced)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Load a YAML config with its `_base_` files, then apply `key=value` overrides."""
    cfg = _load_with_bases(Path(path), stack=())
    return apply_overrides(cfg, overrides or [])


def _load_with_bases(path: Path, stack: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"_base_ cycle: {chain}")
    if not path.is_file():
        where = f" (a _base_ of {stack[-1]})" if stack else ""
        raise FileNotFoundError(f"config file {path} not found{where}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    raw = load_yaml_text(text, str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level, got {type(raw).__name__}")
    bases = raw.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    cfg: dict[str, Any] = {}
    for base in bases:
        cfg = merge(cfg, _load_with_bases(path.parent / base, stack=(*stack, path)))
    return merge(cfg, raw)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` → (['a', 'b', 'c'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train_cfg.max_iters=200)")
    key, value = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {text!r} has an empty key part")
    return keys, load_yaml_text(value, f"override {text!r}") if value.strip() else None


def load_yaml_text(text: str, where: str) -> Any:
    """Parse YAML text safely, after checking its nesting and expanded size (`where` names it)."""
    check_yaml_size(text, where)
    return yaml.load(text, Loader=_YamlLoader)


def check_yaml_size(text: str, where: str) -> None:
    """A ConfigError naming `where` when the YAML nests deeper than `max_config_depth` or holds
    more than `max_config_nodes` values once its aliases are expanded.

    Reads the parser's events (no recursion, nothing built): an anchored node's expanded size is
    recorded when it ends, and every alias adds that size, so a billion-laughs document is refused
    after reading a few lines of it. Syntax errors are left to the loader, which reports them.
    """
    lim = get_limits()
    depth, total = 0, 0
    anchors: dict[str, int] = {}
    starts: list[tuple[str | None, int]] = []
    try:
        for event in yaml.parse(text, Loader=_YamlLoader):
            if isinstance(event, yaml.AliasEvent):
                total += anchors.get(event.anchor, 1)
            elif isinstance(event, yaml.ScalarEvent):
                total += 1
                if event.anchor:
                    anchors[event.anchor] = 1
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                total += 1
                depth += 1
                if depth > lim.max_config_depth:
                    raise ConfigError(
                        f"{where}: nested deeper than {lim.max_config_depth} levels (line "
                        f"{event.start_mark.line + 1}); " + lim.how_to_raise("max_config_depth")
                    )
                starts.append((event.anchor, total))
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
                anchor, start = starts.pop()
                if anchor:
                    anchors[anchor] = total - start + 1
            if total > lim.max_config_nodes:
                raise ConfigError(
                    f"{where}: more than {lim.max_config_nodes} values once its aliases (*name) are expanded "
                    f"(line {event.start_mark.line + 1}); " + lim.how_to_raise("max_config_nodes")
                )
    except yaml.YAMLError:
        return  # the loader reports the syntax error with its position


def load_json_file(path: str | os.PathLike) -> Any:
    """Parse a JSON file (a model's `config.json`, ...) after checking its size and nesting.

    Larger than `max_config_bytes` or nested deeper than `max_config_depth`: a ConfigError naming
    the file. Invalid JSON raises `json.JSONDecodeError` as `json.load` does.
    """
    lim = get_limits()
    size = os.path.getsize(path)
    if size > lim.max_config_bytes:
        raise ConfigError(
            f"{path}: {size} bytes, over the limit of {lim.max_config_bytes} for a JSON file; "
            + lim.how_to_raise("max_config_bytes")
        )
    with open(path, encoding="utf-8") as f:
        text = f.read()
    depth = json_depth(text)
    if depth > lim.max_config_depth:
        raise ConfigError(
            f"{path}: nested {depth} levels deep, over the limit of {lim.max_config_depth}; "
            + lim.how_to_raise("max_config_depth")
        )
    return json.loads(text)


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def json_depth(text: str) -> int:
    """The deepest nesting of objects and arrays in JSON `text` (brackets inside strings ignored)."""
    depth = deepest = 0
    for char in re.sub(r"[^\[\]{}]", "", _JSON_STRING.sub("", text)):
        depth += 1 if char in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A new config with dotted overrides applied; list items are addressed by index (`a.0.b=1`)."""
    cfg = copy.deepcopy(cfg)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = cfg
        for k in keys[:-1]:
            node = _child(node, k, text, create=True)
        last = keys[-1]
        if isinstance(node, list):
            node[_index(node, last, text)] = value
        elif isinstance(node, dict):
            if isinstance(value, dict) and isinstance(node.get(last), dict):
                node[last] = merge(node[last], value)
            else:
                node[last] = value
        else:
            parent = ".".join(keys[:-1])
            raise ConfigError(f"override {text!r}: {parent} is a {type(node).__name__}, not a mapping")
    return cfg


def _index(node: list, key: str, text: str) -> int:
    try:
        idx = int(key)
        node[idx]
    except (ValueError, IndexError):
        raise ConfigError(
            f"override {text!r}: {key!r} is not a valid index into a list of {len(node)}"
        ) from None
    return idx


def _child(node: Any, key: str, text: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, key, text)]
    if not isinstance(node, dict):
        raise ConfigError(f"override {text!r}: cannot descend into {key!r} of a {type(node).__name__}")
    if key not in node or node[key] is None:
        if not create:
            raise ConfigError(f"override {text!r}: no key {key!r}")
        node[key] = {}
    return node[key]


def get_path(cfg: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """`get_path(cfg, "train_cfg.max_iters")`; `default` when any part is missing."""
    node: Any = cfg
    for k in dotted.split("."):
        if isinstance(node, dict) and k in node:
            node = node[k]
        else:
            return default
    return node


def dump_config(cfg: dict[str, Any], path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, umask_mode())  # mkstemp makes it 0600; a plain write follows the umask
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(to_plain(cfg), f, sort_keys=False, default_flow_style=None)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def to_plain(obj: Any) -> Any:
    """Tuples to lists, recursively, so a config dumps as plain YAML/JSON."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
