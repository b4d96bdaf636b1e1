#!/usr/bin/env python
"""Convert an MMSegmentation Python config to a segaccel YAML config.

    python scripts/convert_mmseg_config.py MMSEG_CONFIG.py OUT.yaml

A thin wrapper of `segaccel.cli.convert_mmseg_config`, installed as `segaccel convert-mmseg-config`.
`python scripts/convert_mmseg_config.py --help` lists every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a clone, installed or not
try:
    from segaccel.cli.convert_mmseg_config import *  # noqa: F403  (the command's names, for code that loads this file)
    from segaccel.cli.convert_mmseg_config import main, run  # noqa: F401
except ImportError as exc:  # not a clone any more, or segaccel's dependencies missing
    sys.exit(
        f"{Path(__file__).name}: cannot import {exc.name or 'segaccel'} ({exc}). Run this script from "
        "a clone of the repository after `pip install -e .` in it, or install the package "
        "(pip install segaccel) and run `segaccel convert-mmseg-config ...` from any folder."
    )

if __name__ == "__main__":
    sys.exit(run())
