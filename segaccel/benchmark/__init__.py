"""Benchmarks behind `scripts/benchmark.py`: one module a sub-command.

Each module exposes `add_arguments(parser)` and `run(args) -> list[dict]` (the rows of the table it
prints). Comparisons are measured side by side in the same run.
"""

SUBCOMMANDS = {
    "metric": "segaccel.benchmark.metric",
    "data": "segaccel.benchmark.data",
    "train": "segaccel.benchmark.train",
    "infer": "segaccel.benchmark.infer",
}
