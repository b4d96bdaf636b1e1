#!/usr/bin/env python
"""Convert MMSegmentation or transformers weights to a segaccel model folder.

    python scripts/convert_checkpoint.py CHECKPOINT OUT_DIR [--config CONFIG]

A thin wrapper of `segaccel.cli.convert_checkpoint`, installed as `segaccel convert-checkpoint`.
`python scripts/convert_checkpoint.py --help` lists every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a clone, installed or not
try:
    from segaccel.cli.convert_checkpoint import *  # noqa: F403  (the command's names, for code that loads this file)
    from segaccel.cli.convert_checkpoint import main, run  # noqa: F401
except ImportError as exc:  # not a clone any more, or segaccel's dependencies missing
    sys.exit(
        f"{Path(__file__).name}: cannot import {exc.name or 'segaccel'} ({exc}). Run this script from "
        "a clone of the repository after `pip install -e .` in it, or install the package "
        "(pip install segaccel) and run `segaccel convert-checkpoint ...` from any folder."
    )

if __name__ == "__main__":
    sys.exit(run())
