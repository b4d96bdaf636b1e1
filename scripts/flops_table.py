#!/usr/bin/env python
"""Rewrite (or `--check`) the parameter/FLOP tables in docs/ from `scripts/get_flops.py`'s count.

    python scripts/flops_table.py             # rewrite every table
    python scripts/flops_table.py --check     # exit 1, naming the rows, when a table differs
    python scripts/flops_table.py zoo         # one table (zoo: docs/models/index.md)

The tables sit between `<!-- flops-table: NAME -->` and `<!-- /flops-table -->`
(`segaccel.benchmark.flops_table`).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install

from segaccel.benchmark.flops_table import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--root", str(ROOT), *sys.argv[1:]]))
