#!/usr/bin/env python
"""Train a segmentor from a config.

    python scripts/train.py configs/quickstart.yaml [--dataset PATH_OR_HUB_ID] [--work-dir DIR]
        [--resume [PATH]] [--mixed_precision no|bf16|fp16] [key=value ...]
    accelerate launch --config_file accelerate_config.yaml scripts/train.py configs/quickstart.yaml

A thin wrapper of `segaccel.cli.train`, installed as `segaccel train`.
`python scripts/train.py --help` lists every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a clone, installed or not
try:
    from segaccel.cli.train import *  # noqa: F403  (the command's names, for code that loads this file)
    from segaccel.cli.train import main, run  # noqa: F401
except ImportError as exc:  # not a clone any more, or segaccel's dependencies missing
    sys.exit(
        f"{Path(__file__).name}: cannot import {exc.name or 'segaccel'} ({exc}). Run this script from "
        "a clone of the repository after `pip install -e .` in it, or install the package "
        "(pip install segaccel) and run `segaccel train ...` from any folder."
    )

if __name__ == "__main__":
    sys.exit(run())
