#!/usr/bin/env python
"""Evaluate a trained model on a dataset split and write `metrics.json`.

    python scripts/test.py work_dirs/quickstart/model            # an exported model folder
    python scripts/test.py CONFIG --checkpoint work_dirs/x/checkpoints/iter_2000
    accelerate launch scripts/test.py MODEL_DIR test_dataloader.batch_size=8

A model folder carries everything it needs (its `config.yaml` names the dataset it was trained
on); `key=value` overrides change the dataset, batch size, workers, ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from segaccel.config import apply_overrides, load_config  # noqa: E402
from segaccel.engine.runner import Runner  # noqa: E402
from segaccel.models import Segmentor  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate a segaccel model.")
    parser.add_argument(
        "target", help="a YAML config, or an exported model folder (config.json + model.safetensors)"
    )
    parser.add_argument(
        "--checkpoint", help="weights for a config: a checkpoint or model folder, or a .safetensors file"
    )
    parser.add_argument("--work-dir", "--work_dir", dest="work_dir", help="where metrics.json goes")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    target = Path(args.target)
    model = None
    if target.is_dir():
        if not (target / "config.json").is_file():
            raise SystemExit(f"{target} is not a model folder (no config.json)")
        cfg_file = target / "config.yaml"
        if not cfg_file.is_file():
            raise SystemExit(f"{target} has no config.yaml naming its dataset; pass a config instead")
        cfg = apply_overrides(load_config(cfg_file), args.overrides)
        model = Segmentor.from_pretrained(str(target))
        work_dir = args.work_dir or str(target.parent / "test")
    else:
        cfg = load_config(target, args.overrides)
        work_dir = args.work_dir or str(Path("work_dirs") / target.stem / "test")
    runner = Runner(cfg, work_dir=work_dir, config_path=str(target))
    metrics = runner.test(model=model, checkpoint=args.checkpoint)
    if runner.accelerator.is_main_process:
        print(" ".join(f"{k}: {v:.2f}" for k, v in metrics.items()))
    return metrics


if __name__ == "__main__":
    main()
