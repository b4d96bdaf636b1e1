#!/usr/bin/env python
"""Export a model out of PyTorch (ONNX or a torch.export ExportedProgram).

    python scripts/export.py work_dirs/quickstart/model exported/quickstart

A thin wrapper of `segaccel.cli.export`, installed as `segaccel export`.
`python scripts/export.py --help` lists every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a clone, installed or not
try:
    from segaccel.cli.export import *  # noqa: F403  (the command's names, for code that loads this file)
    from segaccel.cli.export import main, run  # noqa: F401
except ImportError as exc:  # not a clone any more, or segaccel's dependencies missing
    sys.exit(
        f"{Path(__file__).name}: cannot import {exc.name or 'segaccel'} ({exc}). Run this script from "
        "a clone of the repository after `pip install -e .` in it, or install the package "
        "(pip install segaccel) and run `segaccel export ...` from any folder."
    )

if __name__ == "__main__":
    sys.exit(run())
