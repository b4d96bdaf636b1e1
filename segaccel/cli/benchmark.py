"""Speed and memory benchmarks, each printing one table.

    python scripts/benchmark.py metric            # IoUMetric vs a per-image numpy histogram
    python scripts/benchmark.py data CONFIG       # samples/s of a training pipeline
    python scripts/benchmark.py train CONFIG      # the full training step
    python scripts/benchmark.py infer CONFIG      # whole and slide inference

Run `python scripts/benchmark.py SUBCOMMAND --help` for each one's options. Installed as
`segaccel benchmark`. Sub-commands that read a config take `key=value` overrides anywhere on the
line, as `segaccel train` does (`--cfg-options key=value ...` is the same thing), and a shipped
config's name (`configs/quickstart.yaml`). `--json-file PATH` (every sub-command) also writes the table's
rows to PATH as a JSON list, for scripts that collect figures (`scripts/gpu_check.sh`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from segaccel.benchmark import SUBCOMMANDS
from segaccel.cli.common import find_config, is_override


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
        sub_parser = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(sub_parser)
        dests = {action.dest for action in sub_parser._actions}
        if "config" in dests and "cfg_options" not in dests:  # every config reader takes overrides
            sub_parser.add_argument(
                "--cfg-options", nargs="*", default=[], metavar="key=value", help="dotted config overrides"
            )
        sub_parser.add_argument(
            "--json-file", metavar="PATH", default=None, help="also write the rows as JSON"
        )
    argv = list(sys.argv[1:] if argv is None else argv)
    # `key=value` words anywhere after the sub-command are config overrides (as --cfg-options)
    overrides = [word for word in argv[1:] if is_override(word)]
    args = parser.parse_args(
        [argv[0], *(word for word in argv[1:] if not is_override(word))] if argv else argv
    )
    if overrides:
        if not hasattr(args, "cfg_options"):
            parser.error(f"benchmark {args.command} reads no config: {' '.join(overrides)} cannot apply")
        args.cfg_options = [*(args.cfg_options or []), *overrides]
    if getattr(args, "config", None):
        args.config = str(find_config(args.config))
    rows = modules[args.command].run(args)
    if args.json_file:
        write_rows(Path(args.json_file), rows)
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    """The rows as a JSON list (values JSON cannot hold written as text), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def run() -> int:
    """The installed command's entry point."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(run())
