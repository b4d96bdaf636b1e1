"""`segaccel COMMAND ...`: the installed commands in one (each also `segaccel-<command>` where listed,
`python -m segaccel.cli.<module>`, and `scripts/<module>.py` in a clone)."""

from __future__ import annotations

import importlib
import sys

# command → (module, one line); `segaccel-train`, `segaccel-test`, ... are the first five alone
COMMANDS = {
    "train": ("segaccel.cli.train", "train a segmentor from a config"),
    "test": ("segaccel.cli.test", "evaluate a model on a dataset split"),
    "infer": ("segaccel.cli.infer", "segment images: PNG masks and overlays"),
    "export": ("segaccel.cli.export", "export a model to ONNX or a torch.export program"),
    "benchmark": ("segaccel.cli.benchmark", "speed and memory benchmarks"),
    "check-dataset": ("segaccel.cli.check_dataset", "scan a dataset for bad samples and class frequencies"),
    "browse-dataset": ("segaccel.cli.browse_dataset", "a grid of transformed training samples"),
    "push-to-hub": ("segaccel.cli.push_to_hub", "push a model (or a demo Space) to the Hub"),
    "demo": ("segaccel.cli.demo", "serve a Gradio demo page for a model"),
    "convert-checkpoint": ("segaccel.cli.convert_checkpoint", "convert MMSegmentation/transformers weights"),
    "convert-mmseg-config": ("segaccel.cli.convert_mmseg_config", "convert an MMSegmentation config"),
    "configs": (None, "list the configs shipped with the package"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return (
        "usage: segaccel COMMAND [ARGS ...]   (segaccel COMMAND --help for its options)\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\nSeveral processes: accelerate launch [--num_processes N] -m segaccel.cli.train CONFIG ..."
    )


def main(argv: list[str] | None = None) -> int:
    """Run `segaccel COMMAND ARGS`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0].replace("_", "-"), argv[1:]
    if name not in COMMANDS:
        print(f"segaccel: no command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    if module_name is None:
        from segaccel.cli.common import list_configs

        print("\n".join(list_configs()))
        return 0
    module = importlib.import_module(module_name)
    sys.argv = [f"segaccel {name}", *rest]  # argparse's prog, and the resume hint's command
    return int(module.run() or 0)


def run() -> int:
    """The installed `segaccel` command."""
    return main()


if __name__ == "__main__":
    sys.exit(run())
