#!/usr/bin/env python
"""Serve a Gradio demo page for a model.

    python scripts/demo.py exported/quickstart --examples examples/

A thin wrapper of `segaccel.cli.demo`, installed as `segaccel demo`.
`python scripts/demo.py --help` lists every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a clone, installed or not
try:
    from segaccel.cli.demo import *  # noqa: F403  (the command's names, for code that loads this file)
    from segaccel.cli.demo import main, run  # noqa: F401
except ImportError as exc:  # not a clone any more, or segaccel's dependencies missing
    sys.exit(
        f"{Path(__file__).name}: cannot import {exc.name or 'segaccel'} ({exc}). Run this script from "
        "a clone of the repository after `pip install -e .` in it, or install the package "
        "(pip install segaccel) and run `segaccel demo ...` from any folder."
    )

if __name__ == "__main__":
    sys.exit(run())
