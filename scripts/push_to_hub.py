#!/usr/bin/env python
"""Push a trained model (or a demo Space) to the Hugging Face Hub.

    python scripts/push_to_hub.py work_dirs/quickstart my-org/segformer-quickstart

A thin wrapper of `segaccel.cli.push_to_hub`, installed as `segaccel push-to-hub`.
`python scripts/push_to_hub.py --help` lists every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a clone, installed or not
try:
    from segaccel.cli.push_to_hub import *  # noqa: F403  (the command's names, for code that loads this file)
    from segaccel.cli.push_to_hub import main, run  # noqa: F401
except ImportError as exc:  # not a clone any more, or segaccel's dependencies missing
    sys.exit(
        f"{Path(__file__).name}: cannot import {exc.name or 'segaccel'} ({exc}). Run this script from "
        "a clone of the repository after `pip install -e .` in it, or install the package "
        "(pip install segaccel) and run `segaccel push-to-hub ...` from any folder."
    )

if __name__ == "__main__":
    sys.exit(run())
