#!/usr/bin/env python
"""Speed and memory benchmarks, each printing one table.

    python scripts/benchmark.py metric            # IoUMetric vs a per-image numpy histogram
    python scripts/benchmark.py data CONFIG       # samples/s of a training pipeline
    python scripts/benchmark.py train CONFIG      # the full training step
    python scripts/benchmark.py infer CONFIG      # whole and slide inference

Run `python scripts/benchmark.py SUBCOMMAND --help` for each one's options.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from segaccel.benchmark import SUBCOMMANDS  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description="segaccel benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a sub-command not written yet
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0]))
    args = parser.parse_args(argv)
    return modules[args.command].run(args)


if __name__ == "__main__":
    main()
