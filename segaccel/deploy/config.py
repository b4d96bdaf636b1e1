"""The `config.json` of an exported model folder: what pre- and post-processing need beside the graph.

An exported folder holds the graph (`model.onnx` or `model.pt2`) and this file; it is written by
`segaccel.export` and read here, so the runtime never needs the model's code. Keys:

- `export`: `format` (`onnx` | `exported-program`), `file`, `dtype` (of the network; logits are
  float32 either way), `inputs`/`outputs` (names), `input_range` (`batch`/`height`/`width`:
  `[min, max]`, `max` null for unbounded), `opset`, `check` (the parity check run at export time),
  `torch_version`, `segaccel_version`;
- `num_classes`, `out_channels` (1: binary, a sigmoid `threshold` decides), `align_corners`;
- `id2label`, `label2id`, `palette`;
- `test_cfg`: `{mode: whole}` or `{mode: slide, crop_size: [h, w], stride: [h, w]}`;
- `test_pipeline`: the transforms applied before the network (the test-time resize);
- `data_preprocessor`: `pad_val` and the test-time padding (`test_cfg`: `{size}` or `{size_divisor}`),
  with `mean`/`std`/`channel_order` for reference (they are inside the graph);
- `min_input_size`: the smallest `[h, w]` the network takes (smaller inputs are padded up to it);
- `source_model`: the full model description it was exported from (provenance only).
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segaccel.registry import ConfigError

CONFIG_NAME = "config.json"
EXPORT_FORMAT_VERSION = 1
FORMATS = {"onnx": "model.onnx", "exported-program": "model.pt2"}


@dataclass
class ExportedConfig:
    """The parsed `config.json` of an exported folder (see the module docstring)."""

    format: str
    file: str
    dtype: str
    num_classes: int
    out_channels: int
    threshold: float | None = None
    align_corners: bool = False
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    palette: list[list[int]] | None = None
    test_cfg: dict[str, Any] = field(default_factory=lambda: {"mode": "whole"})
    test_pipeline: list[dict[str, Any]] | None = None
    pad_val: float = 0.0
    test_size: tuple[int, int] | None = None
    test_size_divisor: int | None = None
    min_input_size: tuple[int, int] | None = None
    input_range: dict[str, list[int | None]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, where: str = CONFIG_NAME) -> ExportedConfig:
        """Check and parse a loaded `config.json`; a ConfigError names `where` and the key."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        export = data.get("export")
        if not isinstance(export, dict):
            raise ConfigError(
                f"{where}: no `export` object: not an exported model folder (scripts/export.py writes one)"
            )
        version = data.get("format_version", EXPORT_FORMAT_VERSION)
        if not isinstance(version, int) or version > EXPORT_FORMAT_VERSION:
            raise ConfigError(
                f"{where}: format_version {version!r} is newer than this segaccel reads "
                f"({EXPORT_FORMAT_VERSION}); upgrade segaccel"
            )
        fmt = export.get("format")
        if fmt not in FORMATS:
            raise ConfigError(f"{where}: export.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        pre = _object(data, "data_preprocessor", where)
        pre_test = pre.get("test_cfg") or {}
        if not isinstance(pre_test, dict):
            raise ConfigError(f"{where}: data_preprocessor.test_cfg must be an object, got {pre_test!r}")
        id2label = data.get("id2label")
        if id2label is not None:
            if not isinstance(id2label, dict):
                raise ConfigError(f"{where}: id2label must be an object, got {type(id2label).__name__}")
            try:
                id2label = {int(k): str(v) for k, v in id2label.items()}
            except ValueError as exc:
                raise ConfigError(f"{where}: id2label keys must be class indices: {exc}") from exc
        return cls(
            format=fmt,
            file=_str(export, "file", where, default=FORMATS[fmt]),
            dtype=_str(export, "dtype", where, default="float32"),
            num_classes=_int(data, "num_classes", where),
            out_channels=_int(data, "out_channels", where),
            threshold=data.get("threshold"),
            align_corners=bool(data.get("align_corners", False)),
            id2label=id2label,
            label2id=data.get("label2id"),
            palette=data.get("palette"),
            test_cfg=check_test_cfg(data.get("test_cfg"), f"{where}: test_cfg"),
            test_pipeline=data.get("test_pipeline"),
            pad_val=float(pre.get("pad_val", 0.0)),
            test_size=_pair_or_none(pre_test.get("size"), f"{where}: data_preprocessor.test_cfg.size"),
            test_size_divisor=pre_test.get("size_divisor"),
            min_input_size=_pair_or_none(data.get("min_input_size"), f"{where}: min_input_size"),
            input_range=dict(export.get("input_range") or {}),
            raw=data,
        )

    @classmethod
    def read(cls, folder: str | Path) -> ExportedConfig:
        """Read `folder/config.json`; a missing, non-JSON or malformed file is a ConfigError naming it."""
        path = Path(folder) / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"{folder}: no {CONFIG_NAME}: not an exported model folder")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
        return cls.from_json(data, str(path))


def is_exported_folder(path: str | Path) -> bool:
    """Whether `path` is a folder written by `segaccel.export` (a graph file and its config.json)."""
    folder = Path(path)
    if not folder.is_dir() or not (folder / CONFIG_NAME).is_file():
        return False
    if not any((folder / name).is_file() for name in FORMATS.values()):
        return False
    try:
        data = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("export"), dict)


def check_test_cfg(test_cfg: Any, where: str) -> dict[str, Any]:
    """`{mode: whole}` or `{mode: slide, crop_size: [h, w], stride: [h, w]}` (lists of positive ints)."""
    if test_cfg is None:
        return {"mode": "whole"}
    if not isinstance(test_cfg, dict):
        raise ConfigError(f"{where}: expected {{mode: whole}} or {{mode: slide, crop_size, stride}}")
    mode = test_cfg.get("mode", "whole")
    if mode == "whole":
        extra = sorted(set(test_cfg) - {"mode"})
        if extra:
            raise ConfigError(f"{where}: unknown keys for mode 'whole': {', '.join(extra)}")
        return {"mode": "whole"}
    if mode != "slide":
        raise ConfigError(f"{where}: mode must be 'whole' or 'slide', got {mode!r}")
    extra = sorted(set(test_cfg) - {"mode", "crop_size", "stride"})
    if extra:
        raise ConfigError(f"{where}: unknown keys for mode 'slide': {', '.join(extra)}")
    missing = [k for k in ("crop_size", "stride") if test_cfg.get(k) is None]
    if missing:
        raise ConfigError(f"{where}: mode 'slide' needs {' and '.join(missing)} (as [h, w])")
    return {
        "mode": "slide",
        "crop_size": list(_pair_or_none(test_cfg["crop_size"], f"{where}.crop_size")),
        "stride": list(_pair_or_none(test_cfg["stride"], f"{where}.stride")),
    }


def _object(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be an object, got {type(value).__name__}")
    return value


def _str(data: dict[str, Any], key: str, where: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: export.{key} must be a string, got {value!r}")
    return value


def _int(data: dict[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: {key} must be a positive int, got {value!r}")
    return value


def _pair_or_none(value: Any, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigError(f"{where}: expected [h, w] positive ints, got {value!r}")
    return int(value[0]), int(value[1])
