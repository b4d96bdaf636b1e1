"""Model cards for segaccel models, written with huggingface_hub's `ModelCard` / `ModelCardData`.

A card is built from data only — the model's saved config (`config.json`), its metrics
(`metrics.json`) and the resolved training config (`config.yaml`). It is on the ground floor (it
imports only the ground floor: `config`'s YAML reader, with its size and depth checks), so
`Segmentor.save_pretrained` can write the card while `hub/` (push helpers) uses the models and is
never used by them (DESIGN §3).

Metadata: `library_name: segaccel`, `pipeline_tag: image-segmentation`, the licence, tags, `datasets`,
and the evaluation results as `model-index` (`EvalResult`s: mIoU, mAcc, aAcc, ... on the dataset split),
which the Hub shows and `ModelCard.load(...).data.eval_results` parses back. Text: a usage snippet,
the results and per-class table, the model, the training command and the training config.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from segaccel.config import load_yaml_text

GENERATED_MARKER = "<!-- segaccel:generated-card (delete this line to keep your edits when re-saving) -->"
TAGS = ["segaccel", "semantic-segmentation", "image-segmentation", "pytorch"]
METRICS_FILE = "metrics.json"
TRAIN_CONFIG_FILE = "config.yaml"

# our summary names → (`evaluate`-style metric id, display name)
METRIC_TYPES = {
    "mIoU": "mean_iou",
    "mAcc": "mean_accuracy",
    "aAcc": "overall_accuracy",
    "mDice": "mean_dice",
    "mFscore": "mean_fscore",
    "mPrecision": "mean_precision",
    "mRecall": "mean_recall",
}


DEFAULT_LICENSE = "apache-2.0"
# Licence ids the Hub knows; any other licence is written `license: other` + `license_name` (+ a link)
HUB_LICENSES = {
    "apache-2.0", "mit", "bsd", "bsd-2-clause", "bsd-3-clause", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0",
    "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0", "openrail", "creativeml-openrail-m",
    "gpl-3.0", "lgpl-3.0", "agpl-3.0", "mpl-2.0", "llama2", "llama3", "gemma", "other", "unknown",
}
LICENSE_LINKS = {"dinov3-license": "https://ai.meta.com/resources/models-and-libraries/dinov3-license/"}


def weights_license(model_config: Mapping[str, Any]) -> str | None:
    """The licence of the backbone weights a model was trained from, as its config records it
    (`backbone.weights_license`, e.g. `dinov3-license`), else None."""
    backbone = model_config.get("backbone")
    value = backbone.get("weights_license") if isinstance(backbone, Mapping) else None
    return str(value) if value else None


def license_metadata(license: str) -> dict[str, str]:
    """Model-card metadata for a licence: `{license}` for one the Hub knows, else
    `{license: other, license_name, license_link}` (the Hub's form, e.g. DINOv3's `dinov3-license`)."""
    if license in HUB_LICENSES:
        return {"license": license}
    meta = {"license": "other", "license_name": license}
    if license in LICENSE_LINKS:
        meta["license_link"] = LICENSE_LINKS[license]
    return meta


def is_generated_card(text: str) -> bool:
    """Whether a README.md is a card segaccel wrote (and may replace), not one written by hand."""
    return GENERATED_MARKER in text


def build_model_card(
    model_config: Mapping[str, Any],
    *,
    metrics: Mapping[str, Any] | None = None,
    train_config: Mapping[str, Any] | None = None,
    train_command: str | None = None,
    repo_id: str | None = None,
    model_dir: str | os.PathLike | None = None,
    model_name: str | None = None,
    dataset: str | None = None,
    dataset_split: str | None = None,
    license: str | None = None,
    **_: Any,
) -> ModelCard:
    """The model card of a model described by `model_config` (what `config.json` holds).

    Args:
        metrics: the summary in percent (`aAcc`, `mIoU`, `mAcc`, ...), optionally with `per_class`:
            `{"IoU": {class name: value}, "Acc": {...}}` (or lists in class order).
        train_config: the resolved training config (names the dataset and split, shown in full).
        train_command: the command line that trained the model, when known.
        repo_id: the Hub repo the card is for (used in the usage snippet).
        model_dir: a model folder; `metrics.json` and `config.yaml` there fill in `metrics` and
            `train_config` when those are not given.
        dataset, dataset_split: override the dataset id and split read from `train_config`.
        license: the weights' licence; default: the backbone weights' (`backbone.weights_license` in
            `model_config`: weights trained from them stay under it), else Apache-2.0.
    """
    if model_dir is not None:
        folder = Path(model_dir)
        if metrics is None and (folder / METRICS_FILE).is_file():
            metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
        if train_config is None and (folder / TRAIN_CONFIG_FILE).is_file():
            text = (folder / TRAIN_CONFIG_FILE).read_text(encoding="utf-8")
            train_config = load_yaml_text(text, str(folder / TRAIN_CONFIG_FILE))  # size and depth checked
        model_name = model_name or (repo_id.split("/")[-1] if repo_id else None) or folder_model_name(folder)
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else "segaccel-model")
    metrics = dict(metrics or {})
    dataset_cfg = _dataset_cfg(train_config)
    dataset = dataset or dataset_cfg.get("path")
    split = dataset_split or dataset_cfg.get("split") or "validation"
    class_names = _class_names(model_config)

    results = _eval_results(metrics, dataset, dataset_cfg.get("name"), split)
    license = license or weights_license(model_config) or DEFAULT_LICENSE
    data = ModelCardData(
        library_name="segaccel",
        pipeline_tag="image-segmentation",
        **license_metadata(license),
        tags=list(TAGS),
        datasets=[dataset] if dataset else None,
        model_name=model_name if results else None,
        eval_results=results or None,
    )
    sections = [
        f"# {model_name}",
        _summary(model_config, dataset, class_names),
        _usage(repo_id or "PATH_OR_REPO_ID"),
        _results_section(metrics, dataset, split, class_names),
        _model_section(model_config),
        _license_section(license, weights_license(model_config)),
        _training_section(train_config, train_command),
    ]
    text = "\n\n".join(s for s in sections if s)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{GENERATED_MARKER}\n\n{text}\n")


def write_model_card(model_dir: str | os.PathLike, **kwargs: Any) -> Path:
    """(Re)write `README.md` in a model folder from its `config.json`, `metrics.json` and `config.yaml`.

    A README.md written by hand (without segaccel's marker) is kept; returns the card's path.
    """
    folder = Path(model_dir)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (not a saved segaccel model)")
    readme = folder / "README.md"
    if readme.is_file() and not is_generated_card(readme.read_text(encoding="utf-8")):
        return readme
    model_config = json.loads(config_file.read_text(encoding="utf-8"))
    build_model_card(model_config, model_dir=folder, **kwargs).save(readme)
    return readme


# --- metadata ------------------------------------------------------------------------------------------
def _eval_results(
    metrics: Mapping[str, Any], dataset: str | None, dataset_config: str | None, split: str
) -> list[EvalResult]:
    if not dataset:
        return []
    results = []
    for key, metric_type in METRIC_TYPES.items():
        value = metrics.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            continue
        results.append(
            EvalResult(
                task_type="image-segmentation",
                task_name="Semantic Segmentation",
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_config=dataset_config,
                dataset_split=split,
                metric_type=metric_type,
                metric_name=key,
                metric_value=round(float(value), 2),
            )
        )
    return results


def _dataset_cfg(train_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The dataset options of the split the metrics come from (val, else test, else train)."""
    if not isinstance(train_config, Mapping):
        return {}
    out: dict[str, Any] = {}
    for loader in ("train_dataloader", "test_dataloader", "val_dataloader"):  # later wins
        dataset = (train_config.get(loader) or {}).get("dataset")
        if isinstance(dataset, Mapping):
            out.update({k: dataset[k] for k in ("path", "name") if dataset.get(k)})
            if loader != "train_dataloader" and dataset.get("split"):
                out["split"] = dataset["split"]
    return out


def _class_names(model_config: Mapping[str, Any]) -> list[str] | None:
    id2label = model_config.get("id2label")
    if not id2label:
        return None
    return [str(name) for _, name in sorted((int(k), v) for k, v in id2label.items())]


# --- text ------------------------------------------------------------------------------------------------
def _summary(model_config: Mapping[str, Any], dataset: str | None, class_names: list[str] | None) -> str:
    backbone = (model_config.get("backbone") or {}).get("type", "?")
    head = model_config.get("decode_head") or {}
    num_classes = head.get("num_classes", len(class_names) if class_names else "?")
    where = f" trained on `{dataset}`" if dataset else ""
    return (
        f"A semantic segmentation model ({backbone} backbone, {head.get('type', '?')} decode head, "
        f"{num_classes} classes){where}, made with segaccel (MMSegmentation's dataflow on the Hugging "
        "Face stack). `config.json` rebuilds the whole model, including its preprocessing, test-time resize, "
        "inference mode and class names; the weights are in `model.safetensors`."
    )


def _usage(repo_id: str) -> str:
    return f"""## Usage

```python
from segaccel import Segmentor, inference_model

model = Segmentor.from_pretrained("{repo_id}")
result = inference_model(model, "image.jpg")      # a path, PIL image, array, or a list of them
mask = result.pred_sem_seg.data[0]                # (H, W) class indices at the image's size
print({{i: model.id2label[i] for i in mask.unique().tolist()}})
```

From the command line, after `pip install segaccel` (masks as PNG label ids, and coloured overlays
with a legend; `segaccel test {repo_id} --dataset DATASET` evaluates it on a dataset):

```bash
segaccel infer image.jpg more_images/ --model {repo_id} --out-dir predictions/
```

Fine-tune it on other classes (the classifier is re-initialised, every other weight is loaded):

```python
model = Segmentor.from_pretrained("{repo_id}", id2label={{0: "background", 1: "road"}})
```"""


def _results_section(
    metrics: Mapping[str, Any], dataset: str | None, split: str, class_names: list[str] | None
) -> str:
    summary = {k: metrics[k] for k in METRIC_TYPES if isinstance(metrics.get(k), (int, float))}
    if not summary:
        return "## Evaluation results\n\nNo evaluation results were recorded with this model."
    where = f" on `{dataset}` ({split} split)" if dataset else f" ({split} split)"
    lines = [f"## Evaluation results\n\nIn percent{where}, computed by segaccel's `IoUMetric`.\n"]
    lines += ["| " + " | ".join(summary) + " |", "|" + " --- |" * len(summary)]
    lines.append("| " + " | ".join(_fmt(v) for v in summary.values()) + " |")
    table = _per_class_table(metrics.get("per_class"), class_names)
    if table:
        lines += ["", "### Per class", "", table]
    return "\n".join(lines)


def _per_class_table(per_class: Any, class_names: list[str] | None) -> str | None:
    if not isinstance(per_class, Mapping) or not per_class:
        return None
    columns: dict[str, dict[str, Any]] = {}
    for metric, values in per_class.items():
        if isinstance(values, Mapping):
            columns[str(metric)] = {str(k): v for k, v in values.items()}
        elif isinstance(values, Sequence) and not isinstance(values, str):
            names = class_names or [str(i) for i in range(len(values))]
            columns[str(metric)] = dict(zip(names, values))
    if not columns:
        return None
    rows = list(dict.fromkeys(name for col in columns.values() for name in col))
    lines = ["| Class | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for name in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(col.get(name)) for col in columns.values()) + " |")
    return "\n".join(lines)


def _model_section(model_config: Mapping[str, Any]) -> str:
    backbone = dict(model_config.get("backbone") or {})
    head = dict(model_config.get("decode_head") or {})
    pre = dict(model_config.get("data_preprocessor") or {})
    test_cfg = model_config.get("test_cfg") or {"mode": "whole"}
    resize = [step for step in model_config.get("test_pipeline") or [] if isinstance(step, Mapping)]
    lines = [
        "## Model",
        "",
        f"- backbone: `{_short(backbone)}`",
        f"- decode head: `{_short(head, ('num_classes', 'channels', 'projection'))}`",
        f"- preprocessing: mean {pre.get('mean')}, std {pre.get('std')} (RGB, 0-255)",
        f"- test pipeline: {', '.join(_short(s, tuple(s)) for s in resize) or 'none (the image as it is)'}",
        f"- inference: `{json.dumps(test_cfg)}`",
    ]
    names = _class_names(model_config)
    if names:
        shown = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
        lines.append(f"- classes: {shown}")
    return "\n".join(lines)


def _license_section(license: str, backbone_license: str | None) -> str:
    link = LICENSE_LINKS.get(license)
    named = f"[`{license}`]({link})" if link else f"`{license}`"
    if backbone_license and backbone_license == license:
        return (
            f"## License\n\n{named}: the backbone was initialised from weights under this licence, and "
            "weights trained from them stay under it."
        )
    return f"## License\n\n{named}"


def _training_section(train_config: Mapping[str, Any] | None, train_command: str | None) -> str | None:
    if not train_config and not train_command:
        return None
    lines = ["## Training", ""]
    if train_command:
        lines += ["Trained with:", "", "```bash", train_command, "```", ""]
    if train_config:
        lines += [
            "Train it again with the resolved config (`config.yaml` in this repo, all overrides applied):",
            "",
            "```bash",
            "segaccel train config.yaml --work-dir work_dirs/again",
            "```",
            "",
            "<details><summary>Training config (config.yaml)</summary>",
            "",
            "```yaml",
            yaml.safe_dump(_plain(train_config), sort_keys=False, default_flow_style=None).rstrip(),
            "```",
            "",
            "</details>",
        ]
    return "\n".join(lines)


_BACKBONE_KEYS = ("arch", "embed_dims", "num_layers", "depth")


def _short(cfg: Mapping[str, Any], keys: tuple[str, ...] = _BACKBONE_KEYS) -> str:
    parts = [f"{k}={cfg[k]}" for k in keys if k in cfg and k != "type" and cfg[k] is not None]
    return f"{cfg.get('type', '?')}({', '.join(parts)})"


def _fmt(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return "" if value is None else str(value)


def folder_model_name(folder: str | os.PathLike) -> str:
    """The model name a card gets from its folder (`<work dir>-model` for a runner's export)."""
    folder = Path(folder)
    name = folder.resolve().name
    if name in ("model", "best_model") and folder.resolve().parent.name:
        return f"{folder.resolve().parent.name}-{name}".replace("_", "-")
    return name


def _plain(value: Any) -> Any:
    """Tuples → lists, recursively, so the YAML dump is plain."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
