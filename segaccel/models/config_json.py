"""A model's `config.json`: its layout version, its checks, and the JSON form of constructor arguments.

`Segmentor` is built from exactly the arguments `config.json` holds: every part normalised to JSON
(`to_json`: tuples → lists, keys → strings) with the registered classes' defaults filled in
(`complete_defaults`). The `check_*` functions raise a ConfigError naming the key (`model.test_cfg`,
`model.id2label`, ...) and what was expected; `check_config_json` checks a file's layout before
anything is built, so a malformed or foreign file is reported, never half-loaded.
"""

from __future__ import annotations

import copy
import inspect
import numbers
import os
from collections.abc import Iterable, Sequence
from typing import Any

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from torch import nn

from segaccel.config import load_json_file
from segaccel.registry import MODELS, ConfigError

from .checkpoint_formats import format_of_config

FORMAT_VERSION = 1
"""Version of the `config.json` layout written by `save_pretrained`; bumped on incompatible changes."""


def model_parts(
    backbone: Any,
    decode_head: Any,
    neck: Any = None,
    auxiliary_head: Any = None,
    data_preprocessor: Any = None,
    format_version: Any = FORMAT_VERSION,
    init_cfg: Any = None,
) -> dict[str, Any]:
    """The parts of a `Segmentor` checked and in their JSON form, defaults filled in: what it is built
    from, and the part of `config.json` fixed at construction (plus `format_version`, `init_cfg`).

    A model built from these and one rebuilt from config.json receive exactly the same arguments.
    """
    check_format_version(format_version)
    if init_cfg is not None:
        raise ConfigError(
            "model.init_cfg is not supported: start from weights with `load_from` (a file, folder "
            "or Hub id) or Segmentor.from_pretrained; backbone ImageNet weights go in model.backbone"
        )
    for key, part in (("backbone", backbone), ("decode_head", decode_head)):
        if not isinstance(part, dict):
            raise ConfigError(f"model.{key}: expected a mapping with a `type`, got {type(part).__name__}")
    check_num_classes(decode_head, "model.decode_head")
    if isinstance(auxiliary_head, dict):
        check_num_classes(auxiliary_head, "model.auxiliary_head")
    elif isinstance(auxiliary_head, (list, tuple)):
        for i, head in enumerate(auxiliary_head):
            if isinstance(head, dict):
                check_num_classes(head, f"model.auxiliary_head[{i}]")
    if data_preprocessor is None:
        data_preprocessor = {}
    if not isinstance(data_preprocessor, dict):
        got = type(data_preprocessor).__name__
        raise ConfigError(f"model.data_preprocessor: expected a mapping, got {got}")
    data_preprocessor = {"type": "SegDataPreProcessor", **data_preprocessor}
    parts = dict(
        backbone=backbone,
        decode_head=decode_head,
        neck=neck,
        auxiliary_head=auxiliary_head,
        data_preprocessor=data_preprocessor,
    )
    parts = {key: complete_defaults(to_json(part, f"model.{key}")) for key, part in parts.items()}
    return {**parts, "format_version": format_version, "init_cfg": None}


def to_json(value: Any, key: str) -> Any:
    """`value` as JSON would give it back (tuples → lists, dict keys → str); a clear error otherwise."""
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [to_json(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise ConfigError(f"{key}: key {k!r} is not a string or an int")
            out[str(k)] = to_json(v, f"{key}.{k}")
        return out
    raise ConfigError(
        f"{key}: a {type(value).__name__} is not JSON-able; model arguments must be dicts, lists, strings, "
        "numbers, booleans or None, so that config.json describes the model fully"
    )


def complete_defaults(value: Any) -> Any:
    """Fill the defaults of every registered part (`{"type": ...}` found in MODELS), recursively."""
    if isinstance(value, list):
        return [complete_defaults(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: complete_defaults(v) for k, v in value.items()}
    name = out.get("type")
    if not isinstance(name, str) or name not in MODELS:
        return out
    for pname, param in _init_parameters(MODELS.get(name)).items():
        if pname in out or pname == "type" or param.default is inspect.Parameter.empty:
            continue
        try:
            out[pname] = complete_defaults(to_json(param.default, pname))
        except ConfigError:  # a non-JSON default (a class, a callable) stays implicit
            continue
    return out


def _init_parameters(obj: Any) -> dict[str, inspect.Parameter]:
    """Keyword parameters of a class's constructor, following `**kwargs` up to the base classes."""
    classes = [c for c in obj.__mro__ if "__init__" in vars(c)] if inspect.isclass(obj) else [obj]
    params: dict[str, inspect.Parameter] = {}
    for cls in classes:
        if cls in (nn.Module, object):
            break
        try:
            signature = inspect.signature(cls.__init__ if inspect.isclass(cls) else cls)
        except (TypeError, ValueError):
            break
        var_keyword = False
        for pname, param in signature.parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                var_keyword = True
            elif param.kind is not inspect.Parameter.VAR_POSITIONAL and pname != "self":
                params.setdefault(pname, param)
        if not var_keyword:
            break
    return params


def without_pretrained(cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy where the backbone's `pretrained` and every `init_cfg` are None."""
    cfg = copy.deepcopy(cfg)
    backbone = cfg.get("backbone")
    if isinstance(backbone, dict) and "pretrained" in backbone:
        backbone["pretrained"] = None

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "init_cfg" in node:
                node["init_cfg"] = None
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(cfg)
    return cfg


def _pair(value: Any, key: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigError(f"{key}: expected a positive int or (h, w), got {value!r}")
    return [int(value[0]), int(value[1])]


def check_test_cfg(test_cfg: dict | None) -> dict[str, Any]:
    if test_cfg is not None and not isinstance(test_cfg, dict):
        raise ConfigError(
            f"model.test_cfg: expected a mapping ({{mode: whole}} or {{mode: slide, crop_size, stride}}), "
            f"got {type(test_cfg).__name__}"
        )
    cfg = dict(test_cfg or {})
    mode = cfg.pop("mode", "whole")
    if mode == "whole":
        if cfg:
            raise ConfigError(f"model.test_cfg: unknown keys for mode 'whole': {', '.join(sorted(cfg))}")
        return {"mode": "whole"}
    if mode == "slide":
        missing = [k for k in ("crop_size", "stride") if k not in cfg]
        if missing:
            raise ConfigError(f"model.test_cfg: mode 'slide' needs {', '.join(missing)} (as (h, w))")
        crop_size = _pair(cfg.pop("crop_size"), "model.test_cfg.crop_size")
        stride = _pair(cfg.pop("stride"), "model.test_cfg.stride")
        if cfg:
            raise ConfigError(f"model.test_cfg: unknown keys for mode 'slide': {', '.join(sorted(cfg))}")
        return {"mode": "slide", "crop_size": crop_size, "stride": stride}
    raise ConfigError(f"model.test_cfg.mode: expected 'whole' or 'slide', got {mode!r}")


def check_format_version(version: Any) -> int:
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError(
            f"model.format_version: expected an int (the config.json layout version, 1..{FORMAT_VERSION}), "
            f"got {version!r}"
        )
    if version > FORMAT_VERSION:
        raise ConfigError(
            f"model.format_version: {version} is not supported by this segaccel (it reads "
            f"1..{FORMAT_VERSION}); the model was saved by a newer segaccel: upgrade segaccel to load it"
        )
    if version < 1:
        raise ConfigError(f"model.format_version: expected 1..{FORMAT_VERSION}, got {version}")
    return version


def check_num_classes(head: dict, key: str) -> None:
    """A head's `num_classes`, when given, is a positive int (not a bool, a float or a string)."""
    value = head.get("num_classes")
    if "num_classes" in head and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"{key}.num_classes: expected a positive int, got {value!r}")


_JSON_KINDS = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}
# What each config.json entry must be (None: may be null); the parts' own contents are checked when built.
_CONFIG_JSON_ENTRIES: dict[str, tuple[type | None, ...]] = {
    "backbone": (dict,),
    "decode_head": (dict,),
    "neck": (dict, None),
    "auxiliary_head": (dict, list, None),
    "data_preprocessor": (dict, None),
    "test_cfg": (dict, None),
    "id2label": (dict, None),
    "label2id": (dict, None),
    "palette": (list, None),
    "test_pipeline": (list, None),
    "format_version": (int,),
    "init_cfg": (dict, None),
}


def _json_kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


def read_config_json(model_id: str, kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """`(True, the parsed config.json)` of a folder or a Hub repo (cache), `(False, None)` without one.

    Located as the Hub mixin does; when it cannot be found or downloaded here, the mixin looks for it
    again and reports the problem its own way.
    """
    if os.path.isdir(model_id):
        path = os.path.join(model_id, constants.CONFIG_NAME)
        if not os.path.isfile(path):
            return False, None
    else:
        hub_kwargs = {
            k: kwargs[k]
            for k in ("revision", "cache_dir", "force_download", "token", "local_files_only")
            if k in kwargs
        }
        try:
            path = hf_hub_download(repo_id=model_id, filename=constants.CONFIG_NAME, **hub_kwargs)
        except (OSError, EntryNotFoundError, ValueError):  # not found, offline, a bad repo id, ...
            return False, None
    return True, load_json_file(path)


def check_config_json(config: Any, where: str, given: dict[str, Any]) -> None:
    """A ConfigError naming `where` (the file) unless `config` has the layout `save_pretrained` writes.

    Entries the caller passes to `from_pretrained` (`given`) replace the file's and are not checked here.
    A foreign config (a transformers SegFormer's `model_type: segformer`, ...) is checked by its converter.
    """
    if not isinstance(config, dict):
        raise ConfigError(
            f'{where}: expected a JSON object describing the model ({{"backbone": {{...}}, '
            f'"decode_head": {{...}}, ...}}), got {_json_kind(config)}'
        )
    if format_of_config(config) is not None:
        return
    if "format_version" in config and "format_version" not in given:
        try:
            check_format_version(config["format_version"])
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    missing = [k for k in ("backbone", "decode_head") if k not in config and k not in given]
    if missing:
        raise ConfigError(f"{where}: missing {' and '.join(missing)} (objects with a `type`)")
    for key, kinds in _CONFIG_JSON_ENTRIES.items():
        if key not in config or key in given:
            continue
        value = config[key]
        ok = any(
            value is None if kind is None else isinstance(value, kind) and not isinstance(value, bool)
            for kind in kinds
        )
        if not ok:
            names = [{dict: "an object", list: "an array", int: "an int"}.get(k, "null") for k in kinds]
            raise ConfigError(f"{where}: `{key}` must be {' or '.join(names)}, got {_json_kind(value)}")


def check_id2label(id2label: dict | None, num_classes: int) -> dict[int, str] | None:
    """Int keys 0..num_classes-1 (JSON's string keys converted back), in order."""
    if id2label is None:
        return None
    if not isinstance(id2label, dict):
        raise ConfigError(f"model.id2label: expected a mapping, got {type(id2label).__name__}")
    try:
        id2label = {int(k): str(v) for k, v in id2label.items()}
    except ValueError as exc:
        raise ConfigError(f"model.id2label: keys must be class indices: {exc}") from exc
    if sorted(id2label) != list(range(num_classes)):
        raise ConfigError(
            f"model.id2label: expected keys 0..{num_classes - 1} for "
            f"decode_head.num_classes={num_classes}, got {sorted(id2label)}"
        )
    return dict(sorted(id2label.items()))


def check_label2id(label2id: dict | None, id2label: dict[int, str] | None) -> dict[str, int] | None:
    if label2id is None:
        return None if id2label is None else {v: k for k, v in id2label.items()}
    if not isinstance(label2id, dict):
        raise ConfigError(f"model.label2id: expected a mapping, got {type(label2id).__name__}")
    bad = {k: v for k, v in label2id.items() if not isinstance(v, numbers.Integral) or isinstance(v, bool)}
    if bad:
        raise ConfigError(f"model.label2id: values must be class indices (ints), got {bad}")
    label2id = {str(k): int(v) for k, v in label2id.items()}
    if id2label is not None and any(id2label.get(i) != name for name, i in label2id.items()):
        raise ConfigError(f"model.label2id {label2id} does not match model.id2label {id2label}")
    return label2id


def check_palette(palette: list | None) -> list[list[int]] | None:
    if palette is None:
        return None
    if not isinstance(palette, Sequence) or isinstance(palette, str):
        raise ConfigError(f"model.palette: expected a list of [r, g, b], got {type(palette).__name__}")
    out = []
    for i, colour in enumerate(palette):
        if (
            not isinstance(colour, Sequence)
            or len(colour) != 3
            or not all(
                isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour
            )
        ):
            raise ConfigError(f"model.palette[{i}]: expected [r, g, b] ints in 0..255, got {colour!r}")
        out.append([int(c) for c in colour])
    return out


def check_pipeline(pipeline: list | None) -> list[dict] | None:
    if pipeline is None:
        return None
    pipeline = to_json(pipeline, "model.test_pipeline")
    if not isinstance(pipeline, list):
        raise ConfigError(f"model.test_pipeline: expected a list of transform configs, got {pipeline!r}")
    for i, step in enumerate(pipeline):
        if not isinstance(step, dict) or "type" not in step:
            raise ConfigError(f"model.test_pipeline.{i}: expected a mapping with a `type`, got {step!r}")
    return pipeline


def from_pretrained_kwargs(
    model_kwargs: dict[str, Any],
    config: dict[str, Any],
    num_classes: int | None,
    *,
    accepted: Iterable[str],
    where: str,
) -> tuple[dict[str, Any], bool]:
    """Constructor arguments for `from_pretrained`: no pretrained pointers, the class count applied.

    `config` is the (converted) config.json, `model_kwargs` the mixin's arguments (config.json's
    entries, replaced by the caller's); an entry of `config` that is not in `accepted` (the
    constructor's parameters) is a ConfigError naming `where`. Returns the arguments and whether the
    heads get a new class count.
    """
    unknown = sorted(set(config) - set(accepted) - {"self"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown entries {', '.join(unknown)} (written by another library or a newer segaccel?)"
        )
    kwargs = without_pretrained(model_kwargs)
    saved = kwargs["decode_head"].get("num_classes")

    def from_config(key: str) -> bool:  # the mixin fills absent arguments from config.json
        value, saved_value = kwargs.get(key), config.get(key)
        if key == "id2label" and isinstance(value, dict):
            value = {str(k): v for k, v in value.items()}
        return value == saved_value

    if kwargs.get("id2label") is not None and not from_config("id2label"):
        if from_config("label2id"):  # new class names: the saved inverse mapping is stale
            kwargs["label2id"] = None
        if num_classes is None:
            num_classes = len(kwargs["id2label"])
    if num_classes is None or num_classes == saved:
        return kwargs, False
    kwargs["decode_head"] = {**kwargs["decode_head"], "num_classes": num_classes}
    aux = kwargs.get("auxiliary_head")
    if isinstance(aux, dict):
        kwargs["auxiliary_head"] = {**aux, "num_classes": num_classes}
    elif isinstance(aux, list):
        kwargs["auxiliary_head"] = [{**a, "num_classes": num_classes} for a in aux]
    # Class names and colours saved for the old classes no longer apply (unless given anew).
    for key in ("id2label", "label2id", "palette"):
        if kwargs.get(key) is not None and from_config(key):
            if key == "palette" and len(kwargs[key]) >= num_classes:
                continue
            kwargs[key] = None
    return kwargs, True
