"""Convert an MMSegmentation config (`.py`, with its `_base_` files) into a segaccel YAML config.

    python scripts/convert_mmseg_config.py pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py pspnet.yaml
    python scripts/train.py pspnet.yaml          # train it here
    python scripts/convert_mmseg_config.py my_model.py model.yaml --model-only   # a dataset without a recipe

The config is read without executing it (only assignments, dicts, lists, arithmetic and the like are
evaluated; see `segaccel/convert/pyconfig.py`). The result holds the model (with its test pipeline),
the dataset recipe mapped from the dataset type, the pipelines, the schedule and the runtime; notes on
what was left out are printed and written at the top of OUT.yaml. The result is then checked: the model
is built (on the meta device: no memory, no downloads), every transform, optimizer and scheduler name
resolved; whatever has no counterpart in segaccel is an error naming its key.

To turn a model-zoo entry (config + checkpoint) into a model folder, use
`scripts/convert_checkpoint.py CHECKPOINT.pth OUT_DIR --config CONFIG.py`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

import segaccel.data  # noqa: F401  (registers the transforms)
import segaccel.engine  # noqa: F401  (registers optimizers, schedulers, loops)
import segaccel.models  # noqa: F401  (registers the models)
from segaccel.config import to_plain
from segaccel.convert.mmseg_config import convert_mmseg_config
from segaccel.registry import MODELS, OPTIMIZERS, SCHEDULERS, TRANSFORMS, ConfigError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Convert an MMSegmentation config into a segaccel config.")
    parser.add_argument("mmseg_config", help="the MMSegmentation .py config")
    parser.add_argument("out", help="the YAML file to write")
    parser.add_argument("--model-only", action="store_true", help="only the model (and its test pipeline)")
    parser.add_argument("--recipes", help="folder of our dataset recipes (default: configs/_base_/datasets)")
    return parser.parse_intermixed_args(argv)


def check_config(cfg: dict[str, Any]) -> None:
    """Build what the config names (the model on the meta device), so that errors name their keys."""
    model = {**cfg["model"], "backbone": {**cfg["model"]["backbone"], "pretrained": None}}
    with torch.device("meta"):
        MODELS.build(model, key="model")
    pipelines = {"model.test_pipeline": cfg["model"].get("test_pipeline") or []}
    for split in ("train", "val", "test"):
        pipelines[f"{split}_dataloader.dataset.pipeline"] = (
            (cfg.get(f"{split}_dataloader") or {}).get("dataset") or {}
        ).get("pipeline") or []
    for key, steps in pipelines.items():
        for i, step in enumerate(steps):
            TRANSFORMS.build(step, key=f"{key}.{i}")
    optimizer = ((cfg.get("optim_wrapper") or {}).get("optimizer") or {}).get("type")
    if optimizer is not None:
        OPTIMIZERS.get(optimizer, key="optim_wrapper.optimizer.type")
    for i, scheduler in enumerate(cfg.get("param_scheduler") or []):
        SCHEDULERS.get(scheduler["type"], key=f"param_scheduler.{i}.type")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    try:
        cfg, notes = convert_mmseg_config(
            args.mmseg_config, model_only=args.model_only, recipes_dir=args.recipes
        )
        check_config(cfg)
    except ConfigError as exc:
        raise SystemExit(f"convert_mmseg_config.py: {args.mmseg_config}: {exc}") from exc
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = [f"# Converted from the MMSegmentation config {Path(args.mmseg_config).name} by segaccel"]
    header += [f"# note: {note}" for note in notes]
    text = yaml.safe_dump(to_plain(cfg), sort_keys=False, default_flow_style=None, width=110)
    out.write_text("\n".join(header) + "\n" + text, encoding="utf-8")
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {out}")
    return cfg


def run() -> int:
    """The installed command's entry point."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(run())
