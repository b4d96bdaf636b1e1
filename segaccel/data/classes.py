"""Class names and colours of a dataset: `id2label` from the config, the data or a JSON file; palettes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

from segaccel.data.rows import LABEL_COLUMNS
from segaccel.data.sources import SYNTHETIC_PATH
from segaccel.data.synthetic import synthetic_id2label
from segaccel.registry import ConfigError


def dataset_id2label(dataset_cfg: dict[str, Any], hf_dataset: Any = None) -> dict[int, str] | None:
    """Class names, from the first source that has them.

    1. the config's `id2label`: a dict, a list, or the name of a JSON file (`{"0": "wall", ...}` or a
       list) — a local file, a file in the local dataset folder `path`, or a file in the Hub
       dataset repo `path` (fetched with `hf_hub_download`, at `revision`);
    2. the synthetic dataset's classes;
    3. the names of a `ClassLabel` in the label column's feature;
    4. an `id2label.json` in the local dataset folder `path`.
    """
    id2label = dataset_cfg.get("id2label")
    if id2label:
        if isinstance(id2label, str):
            return _as_id2label(_read_json_label_file(dataset_cfg, id2label), id2label)
        return _as_id2label(id2label, "dataset.id2label")
    path = str(dataset_cfg.get("path", ""))
    if path == SYNTHETIC_PATH:
        return synthetic_id2label()
    names = _class_label_names(hf_dataset, dataset_cfg)
    if names:
        return dict(enumerate(names))
    local = Path(path) / "id2label.json" if path else None
    if local is not None and local.is_file():
        return _as_id2label(json.loads(local.read_text(encoding="utf-8")), str(local))
    return None


def _as_id2label(value: Any, source: str) -> dict[int, str]:
    try:
        if isinstance(value, dict):
            out = {int(k): str(v) for k, v in value.items()}
        elif isinstance(value, (list, tuple)):
            out = {i: str(name) for i, name in enumerate(value)}
        else:
            raise TypeError(type(value).__name__)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{source}: id2label must map class ids to names ({{0: 'wall', ...}}) or list them, got {exc}"
        ) from exc
    if sorted(out) != list(range(len(out))):
        raise ConfigError(
            f"{source}: id2label ids must be 0..{len(out) - 1} without gaps, got {sorted(out)[:10]}"
        )
    return out


def _read_json_label_file(dataset_cfg: dict[str, Any], filename: str) -> Any:
    """The JSON in `filename`: a local file, a file in the local dataset folder, or one in the Hub repo."""
    path = str(dataset_cfg.get("path", ""))
    candidates = [Path(filename)]
    if path and Path(path).is_dir():
        candidates.insert(0, Path(path) / filename)
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    if not path or Path(path).is_dir() or path in ("parquet", "imagefolder", "json", "csv", "arrow"):
        raise ConfigError(
            f"dataset.id2label: no file {filename!r} (looked at {[str(c) for c in candidates]})"
        )
    from huggingface_hub import hf_hub_download

    try:
        local = hf_hub_download(
            repo_id=path, filename=filename, repo_type="dataset", revision=dataset_cfg.get("revision")
        )
    except Exception as exc:
        raise ConfigError(
            f"dataset.id2label: cannot fetch {filename!r} from the Hub dataset repo {path!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return json.loads(Path(local).read_text(encoding="utf-8"))


def _class_label_names(hf_dataset: Any, dataset_cfg: dict[str, Any]) -> list[str] | None:
    features = getattr(hf_dataset, "features", None)
    if not features:
        return None
    column = dataset_cfg.get("label_column") or next((c for c in LABEL_COLUMNS if c in features), None)
    feature = features.get(column) if column else None
    while feature is not None and not isinstance(feature, datasets.ClassLabel):
        feature = getattr(feature, "feature", None)  # Sequence / List / LargeList of ...
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def check_palette(palette: Any, num_classes: int | None, where: str = "dataset.palette") -> list[list[int]]:
    """`palette` as a list of [r, g, b] ints in 0..255, at least one per class."""
    try:
        colours = [[int(c) for c in colour] for colour in palette]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: expected a list of [r, g, b] colours, got {palette!r:.80}") from exc
    if any(len(c) != 3 or min(c) < 0 or max(c) > 255 for c in colours):
        raise ConfigError(f"{where}: every colour must be [r, g, b] with values in 0..255")
    if num_classes is not None and len(colours) < num_classes:
        raise ConfigError(f"{where}: {len(colours)} colours for {num_classes} classes")
    return colours
