"""Train a segmentor from a config: `segaccel train` (also `segaccel-train`, `scripts/train.py`).

    segaccel train configs/quickstart.yaml
    segaccel train configs/quickstart.yaml --dataset path/to/folder_or/hub-id train_cfg.max_iters=300
    segaccel train CONFIG --work-dir DIR --resume                 # continue a stopped run
    accelerate launch --num_processes 2 -m segaccel.cli.train CONFIG   # several processes

CONFIG is a YAML file, or the name of a shipped config (`configs/quickstart.yaml`, `quickstart`).
`--dataset PATH_OR_HUB_ID` points the train, validation and test loaders at one source (its own
splits, columns found by name, classes from its `id2label.json` or `ClassLabel` feature:
`segaccel.data.dataset_spec`); `dataset.<key>=value` sets an option of that source on purpose
(`dataset.label_column=seg`). `key=value` overrides go anywhere on the line.

`--resume` continues the run in the work dir with the run's own config, from its checkpoint
(`segaccel.engine.resume_config`): the command printed when a run stops resumes it as it was
started; overrides on the resuming line apply on top (`train_cfg.max_iters=N` to train longer).

Exit status: 0 when training completed; 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)
when it was stopped by a signal after saving a checkpoint; 1 when a NaN/inf loss stopped it after
saving the last good state.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segaccel.cli.common import (
    add_overrides_argument,
    early_logging,
    find_config,
    load_run_config,
    parse_command_line,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segaccel train",
        description="Train a segaccel segmentor.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "config", help="a YAML config file, or a shipped config's name (configs/quickstart.yaml)"
    )
    parser.add_argument(
        "--dataset",
        metavar="PATH_OR_HUB_ID",
        help="train, validate and test on this dataset (a folder, a save_to_disk folder or a Hub dataset id)",
    )
    parser.add_argument(
        "--work-dir", "--work_dir", dest="work_dir", help="output folder (default work_dirs/<config name>)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="continue the run in the work dir (its latest checkpoint, its own config), or from PATH",
    )
    parser.add_argument(
        "--mixed_precision",
        "--mixed-precision",
        dest="mixed_precision",
        choices=["no", "fp16", "bf16"],
        help="override the config and the Accelerate setting (fp16 needs a GPU)",
    )
    add_overrides_argument(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = parse_command_line(build_parser(), argv)
    if isinstance(args.resume, str) and "=" in args.resume and not Path(args.resume).exists():
        args.overrides.insert(0, args.resume)  # `--resume key=value`: a bare --resume, then an override
        args.resume = True
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train as the command line says; returns the last validation metrics."""
    from segaccel.engine.loop_context import NonFiniteLossError, TrainingInterrupted
    from segaccel.engine.resume_config import resumed_config
    from segaccel.engine.runner import Runner

    args = parse_args(argv)
    early_logging()
    cfg = load_run_config(args.config, args.overrides, args.dataset)
    work_dir = args.work_dir or cfg.get("work_dir") or str(Path("work_dirs") / find_config(args.config).stem)
    if args.resume:
        overrides = [o for o in args.overrides if not o.startswith("dataset")]  # the run's dataset stays
        cfg = resumed_config(cfg, work_dir, args.resume, overrides)
    runner = Runner(
        cfg,
        work_dir=work_dir,
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


def run() -> int:
    """The installed command's entry point (`segaccel-train`)."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(run())
