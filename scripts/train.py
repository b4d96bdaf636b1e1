#!/usr/bin/env python
"""Train a segmentor from a config.

accelerate launch --config_file accelerate_config.yaml scripts/train.py configs/quickstart.yaml
python scripts/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from segaccel.config import load_config  # noqa: E402
from segaccel.engine.runner import Runner  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a segaccel segmentor.")
    parser.add_argument("config", help="YAML config file")
    parser.add_argument(
        "--work-dir", "--work_dir", dest="work_dir", help="output folder (default work_dirs/<config>)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="resume from the latest complete checkpoint in the work dir, or from PATH",
    )
    parser.add_argument(
        "--mixed_precision",
        "--mixed-precision",
        dest="mixed_precision",
        choices=["no", "fp16", "bf16"],
        help="override the config and the Accelerate setting",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted config overrides, e.g. train_cfg.max_iters=200",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    runner = Runner(
        cfg,
        work_dir=args.work_dir,
        config_path=args.config,
        resume=args.resume,
        mixed_precision=args.mixed_precision,
    )
    runner.train()


if __name__ == "__main__":
    main()
