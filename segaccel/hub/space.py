"""A Hugging Face Space (Gradio) that serves a model: `app.py`, `requirements.txt`, a README whose
front-matter says `sdk: gradio`, the exported model (ONNX, run by onnxruntime) and example images.

    space/
      README.md          front-matter: title, sdk: gradio, sdk_version, app_file: app.py, models, tags
      app.py             ExportedSegmentor("model") → segaccel.deploy.demo.build_demo(...).launch()
      requirements.txt   onnxruntime, gradio and segaccel's own dependencies
      model/             the exported folder (config.json + model.onnx)
      examples/          example images (optional)
      segaccel/          this segaccel's source, unless `segaccel_requirement` names a package to install

`build_space` writes the folder (the "documented folder" to upload by hand, or with `push_space`);
`scripts/push_to_hub.py MODEL SPACE_ID --space` does both.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import segaccel
from segaccel.deploy import ExportedSegmentor, is_exported_folder
from segaccel.deploy.demo import find_examples
from segaccel.file_modes import follow_umask

logger = logging.getLogger(__name__)

DEMO_EXTRAS = ("deploy", "demo")
APP = '''"""Gradio Space: {title} (segaccel; the exported model runs in onnxruntime)."""

from pathlib import Path

from segaccel.deploy import ExportedSegmentor
from segaccel.deploy.demo import build_demo, find_examples

HERE = Path(__file__).resolve().parent
model = ExportedSegmentor(HERE / "model")
examples = find_examples([HERE / "examples"]) if (HERE / "examples").is_dir() else None
demo = build_demo(model, title={title!r}, description={description!r}, examples=examples)

if __name__ == "__main__":
    demo.launch()
'''


def build_space(
    model: str | Path,
    out_dir: str | Path,
    *,
    title: str | None = None,
    description: str | None = None,
    examples: Sequence[str | Path] = (),
    model_repo_id: str | None = None,
    segaccel_requirement: str | None = None,
    checkpoint: str | None = None,
    revision: str | None = None,
) -> Path:
    """Write a Gradio Space folder serving `model` into `out_dir` (replacing what is there).

    `model` is an exported folder (used as it is) or anything `scripts/export.py` takes (exported
    to ONNX, float32, and checked, first). `model_repo_id` (the model's Hub repo) goes into the
    README's `models:` metadata. `segaccel_requirement` (e.g. a pip spec of a published segaccel)
    replaces the bundled `segaccel/` source. The Space loads nothing from the network at start.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        _write_model(model, tmp / "model", checkpoint=checkpoint, revision=revision)
        exported = ExportedSegmentor(tmp / "model")  # the Space's own loading path, checked here
        title = title or f"{Path(str(model)).name or model}: semantic segmentation"
        if description is None:
            names = list((exported.id2label or {}).values())
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            description = f"{exported.num_classes} classes" + (f": {shown}" if shown else "") + "."
        found = find_examples(examples) if examples else []
        if found:
            (tmp / "examples").mkdir()
            for i, path in enumerate(found):
                shutil.copy2(path, tmp / "examples" / f"{i:02d}_{path.name}")
        (tmp / "app.py").write_text(APP.format(title=title, description=description), encoding="utf-8")
        (tmp / "requirements.txt").write_text("\n".join(space_requirements(segaccel_requirement)) + "\n")
        (tmp / "README.md").write_text(space_readme(title, description, model_repo_id), encoding="utf-8")
        if segaccel_requirement is None:
            package = Path(segaccel.__file__).resolve().parent
            shutil.copytree(package, tmp / "segaccel", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        follow_umask(tmp)  # mkdtemp makes the folder 0700
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote a Gradio Space to %s", out_dir)
    return out_dir


def _write_model(model: str | Path, target: Path, checkpoint: str | None, revision: str | None) -> None:
    if is_exported_folder(model):
        if Path(model, "model.onnx").is_file():
            shutil.copytree(model, target, ignore=shutil.ignore_patterns("model.pt2"))
            return
        raise ValueError(f"{model}: a Space runs ONNX models in onnxruntime; export with --format onnx")
    from segaccel.export import export_model, load_model

    source = load_model(model, checkpoint=checkpoint, revision=revision)
    export_model(source.model, target, format="onnx", extra_dir=source.extra_dir)


def space_requirements(segaccel_requirement: str | None = None) -> list[str]:
    """The Space's pip requirements: segaccel's own dependencies and its deploy/demo extras (or a
    pip spec of segaccel itself with those extras)."""
    if segaccel_requirement is not None:
        return [segaccel_requirement]
    try:
        requires = importlib.metadata.requires("segaccel") or []
    except importlib.metadata.PackageNotFoundError:  # a checkout that was not installed
        requires = []
    out = []
    for spec in requires:
        name, _, marker = spec.partition(";")
        extra = re.search(r"extra\s*==\s*[\"']([\w-]+)[\"']", marker)
        if not marker.strip() or (extra and extra.group(1) in DEMO_EXTRAS):
            out.append(name.strip())
    for needed in ("onnxruntime", "gradio"):
        if not any(re.match(rf"{needed}\b", r) for r in out):
            out.append(needed)
    return out


def space_readme(title: str, description: str, model_repo_id: str | None = None) -> str:
    """README.md with the Space front-matter (`sdk: gradio`, the installed gradio's `sdk_version`)."""
    try:
        sdk_version = importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:
        sdk_version = None
    lines = [
        "---",
        f"title: {_yaml_str(title[:60])}",
        "emoji: 🗺️",
        "colorFrom: blue",
        "colorTo: green",
        "sdk: gradio",
        *([f"sdk_version: {sdk_version}"] if sdk_version else []),
        "app_file: app.py",
        "pinned: false",
        "license: apache-2.0",
        "tags:",
        "  - segaccel",
        "  - image-segmentation",
        "  - semantic-segmentation",
        "  - onnx",
        *(["models:", f"  - {model_repo_id}"] if model_repo_id else []),
        "---",
        "",
        f"# {title}",
        "",
        description,
        "",
        "Upload an image (or pick an example) to see the predicted classes blended in, a legend of the",
        "classes present with their share of the pixels, and the mask as a PNG of class ids. The model is",
        "an ONNX export made by segaccel (`scripts/export.py`), run by onnxruntime; `model/config.json`",
        "holds its pre- and post-processing (test-time resize, whole/slide inference, class names).",
        "",
    ]
    return "\n".join(lines)


def push_space(
    space_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    api: Any = None,
) -> str:
    """Create the Gradio Space `repo_id` if needed and upload `space_dir` in one commit; the commit URL."""
    from huggingface_hub import HfApi

    api = api or HfApi(token=token)
    repo_id = api.create_repo(
        repo_id=repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True
    ).repo_id
    info = api.upload_folder(
        repo_id=repo_id,
        repo_type="space",
        folder_path=str(space_dir),
        commit_message=commit_message or "Upload segaccel demo Space",
    )
    return str(getattr(info, "commit_url", info))


def _yaml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
