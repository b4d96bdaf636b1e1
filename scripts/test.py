#!/usr/bin/env python
"""Evaluate a model on a dataset split.

    python scripts/test.py work_dirs/quickstart/model [--dataset PATH_OR_HUB_ID] [--work-dir DIR]
        [key=value ...]
    python scripts/test.py CONFIG --checkpoint work_dirs/x/checkpoints/iter_2000

A thin wrapper of `segaccel.cli.test`, installed as `segaccel test`.
`python scripts/test.py --help` lists every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a clone, installed or not
try:
    from segaccel.cli.test import *  # noqa: F403  (the command's names, for code that loads this file)
    from segaccel.cli.test import main, run  # noqa: F401
except ImportError as exc:  # not a clone any more, or segaccel's dependencies missing
    sys.exit(
        f"{Path(__file__).name}: cannot import {exc.name or 'segaccel'} ({exc}). Run this script from "
        "a clone of the repository after `pip install -e .` in it, or install the package "
        "(pip install segaccel) and run `segaccel test ...` from any folder."
    )

if __name__ == "__main__":
    sys.exit(run())
