#!/usr/bin/env python
"""Speed and memory benchmarks.

    python scripts/benchmark.py metric|data|train|infer [CONFIG] [--options] [key=value ...]

A thin wrapper of `segaccel.cli.benchmark`, installed as `segaccel benchmark`.
`python scripts/benchmark.py --help` lists every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a clone, installed or not
try:
    from segaccel.cli.benchmark import *  # noqa: F403  (the command's names, for code that loads this file)
    from segaccel.cli.benchmark import main, run  # noqa: F401
except ImportError as exc:  # not a clone any more, or segaccel's dependencies missing
    sys.exit(
        f"{Path(__file__).name}: cannot import {exc.name or 'segaccel'} ({exc}). Run this script from "
        "a clone of the repository after `pip install -e .` in it, or install the package "
        "(pip install segaccel) and run `segaccel benchmark ...` from any folder."
    )

if __name__ == "__main__":
    sys.exit(run())
