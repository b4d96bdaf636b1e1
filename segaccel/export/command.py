"""The `export` command (scripts/export.py): arguments and the run, kept here so the script stays thin.

    python scripts/export.py work_dirs/quickstart/model exported/quickstart            # ONNX, fp32
    python scripts/export.py org/segformer-b0-ade exported/b0 --format exported-program
    python scripts/export.py CONFIG.yaml exported/x --checkpoint work_dirs/x/checkpoints/iter_2000
    python scripts/export.py MODEL exported/x-fp16 --dtype float16
"""

from __future__ import annotations

import argparse
import logging

from segaccel.deploy.config import FORMATS
from segaccel.export.exporter import ExportResult, export_model
from segaccel.export.source import load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a model folder (config.json + model.safetensors), a training work dir, a Hub model id, "
        "or a config file with --checkpoint",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the exported folder (replaced atomically)")
    parser.add_argument("--format", choices=list(FORMATS), default="onnx", help="onnx or exported-program")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="network dtype")
    parser.add_argument("--checkpoint", help="weights for a config: a checkpoint or model folder, a file")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of a Hub model id")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument(
        "--example-size", type=int, nargs=2, metavar=("H", "W"), help="the size traced (any size runs later)"
    )
    parser.add_argument(
        "--check-size", type=int, nargs=2, metavar=("H", "W"), help="the size of the parity check input"
    )
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the parity check")


def run(args: argparse.Namespace) -> ExportResult:
    """Load MODEL, export it into OUT_DIR and print what was written and measured."""
    source = load_model(args.model, checkpoint=args.checkpoint, revision=args.revision)
    print(
        f"exporting {source.description} ({type(source.model.backbone).__name__}, "
        f"{source.model.num_classes} classes) to {args.out_dir} as {args.format} ({args.dtype})"
    )
    result = export_model(
        source.model,
        args.out_dir,
        format=args.format,
        dtype=args.dtype,
        example_size=args.example_size,
        check_size=args.check_size,
        extra_dir=source.extra_dir,
        opset=args.opset,
        check=args.check,
    )
    ranges = ", ".join(
        f"{k} {lo}..{hi if hi is not None else 'any'}" for k, (lo, hi) in result.input_range.items()
    )
    print(f"wrote {result.out_dir} in {result.seconds:.1f} s; dynamic input: {ranges}")
    if args.check:
        print(f"max |runtime - PyTorch| on a {result.check_shape} input: {result.max_abs_diff:.3g}")
    return result


def main(argv: list[str] | None = None) -> ExportResult:
    parser = argparse.ArgumentParser(
        description="Export a segaccel model to ONNX or a torch.export ExportedProgram, checked "
        "against PyTorch."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)
