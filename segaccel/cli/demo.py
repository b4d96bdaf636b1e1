"""Serve a Gradio demo page for a model: upload or pick an image, see its classes and their share.

    python scripts/demo.py exported/quickstart --examples examples/        # an exported folder (onnxruntime)
    python scripts/demo.py work_dirs/quickstart/model                      # a PyTorch model folder
    python scripts/demo.py org/segformer-b0-ade --host 0.0.0.0 --port 7860

MODEL is an exported folder (scripts/export.py), a model folder, a training work dir, a Hub id, or a
config with --checkpoint. An `examples/` folder inside MODEL is offered as examples. Needs the
`demo` extra (`pip install 'segaccel[demo]'`; an exported folder also needs `segaccel[deploy]`).
"""

from __future__ import annotations

import argparse
import sys

from segaccel.deploy import demo
from segaccel.export.source import load_any_model


def main(argv: list[str] | None = None) -> object:
    parser = argparse.ArgumentParser(description="Serve a Gradio demo page for a segaccel model.")
    parser.add_argument("model", metavar="MODEL", help="an exported folder, model folder, work dir or Hub id")
    parser.add_argument("--checkpoint", help="weights, when MODEL is a config file")
    parser.add_argument("--revision", help="Hub revision of a Hub model id")
    demo.add_arguments(parser)
    args = parser.parse_intermixed_args(argv)
    model, description = load_any_model(args.model, checkpoint=args.checkpoint, revision=args.revision)
    return demo.run(args, model, description)


def run() -> int:
    """The installed command's entry point."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(run())
