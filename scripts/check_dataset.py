#!/usr/bin/env python
"""Check a dataset before a long training.

    python scripts/check_dataset.py CONFIG [--split train|validation|test] [--dataset PATH_OR_HUB_ID]
        [key=value ...]

A thin wrapper of `segaccel.cli.check_dataset`, installed as `segaccel check-dataset`.
`python scripts/check_dataset.py --help` lists every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a clone, installed or not
try:
    from segaccel.cli.check_dataset import *  # noqa: F403  (the command's names, for code that loads this file)
    from segaccel.cli.check_dataset import main, run  # noqa: F401
except ImportError as exc:  # not a clone any more, or segaccel's dependencies missing
    sys.exit(
        f"{Path(__file__).name}: cannot import {exc.name or 'segaccel'} ({exc}). Run this script from "
        "a clone of the repository after `pip install -e .` in it, or install the package "
        "(pip install segaccel) and run `segaccel check-dataset ...` from any folder."
    )

if __name__ == "__main__":
    sys.exit(run())
