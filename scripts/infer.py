#!/usr/bin/env python
"""Segment images with a saved or Hub model: PNG masks and overlays.

    python scripts/infer.py photo.jpg more_photos/ --model work_dirs/quickstart/model --out-dir out/

A thin wrapper of `segaccel.cli.infer`, installed as `segaccel infer`.
`python scripts/infer.py --help` lists every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a clone, installed or not
try:
    from segaccel.cli.infer import *  # noqa: F403  (the command's names, for code that loads this file)
    from segaccel.cli.infer import main, run  # noqa: F401
except ImportError as exc:  # not a clone any more, or segaccel's dependencies missing
    sys.exit(
        f"{Path(__file__).name}: cannot import {exc.name or 'segaccel'} ({exc}). Run this script from "
        "a clone of the repository after `pip install -e .` in it, or install the package "
        "(pip install segaccel) and run `segaccel infer ...` from any folder."
    )

if __name__ == "__main__":
    sys.exit(run())
