#!/usr/bin/env python
"""Train a segmentor from a config.

accelerate launch --config_file accelerate_config.yaml scripts/train.py configs/quickstart.yaml
python scripts/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--mixed_precision no|bf16|fp16]
    [key=value ...]

Exit status: 0 when training completed; 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)
when it was stopped by a signal after saving a checkpoint; 1 when a NaN/inf loss stopped it after
saving the last good state.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from segaccel.config import load_config  # noqa: E402
from segaccel.engine.loop_context import NonFiniteLossError, TrainingInterrupted  # noqa: E402
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
        help="override the config and the Accelerate setting (fp16 needs a GPU)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted config overrides, e.g. train_cfg.max_iters=200",
    )
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    if isinstance(args.resume, str) and "=" in args.resume and not Path(args.resume).exists():
        args.overrides.insert(0, args.resume)  # `--resume key=value`: a bare --resume, then an override
        args.resume = True
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    runner = Runner(
        cfg,
        work_dir=args.work_dir,
        config_path=args.config,
        resume=args.resume,
        mixed_precision=args.mixed_precision,
    )
    try:
        return runner.train()
    except TrainingInterrupted as stop:  # already logged, with the checkpoint and how to resume
        sys.exit(128 + stop.signum if stop.signum else 1)
    except NonFiniteLossError:  # already logged, with the saved last good state
        sys.exit(1)


if __name__ == "__main__":
    main()
