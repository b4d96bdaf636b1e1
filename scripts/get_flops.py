#!/usr/bin/env python
"""Parameters and FLOPs of a config's model (MMSegmentation's tools/analysis_tools/get_flops.py).

    python scripts/get_flops.py configs/segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.yaml
    python scripts/get_flops.py CONFIG --shape 512 1024

FLOPs are counted by `torch.utils.flop_counter` over one forward in `tensor` mode (backbone, neck and
decode head; no auxiliary head, no final resize) on a `(1, 3, H, W)` input, attention on the CPU
included (`segaccel.benchmark.flops`, the count behind the docs' tables and the benchmarks' FLOP/s);
the input size defaults to the crop size in the config's file name (`..._ade20k-512x512.yaml` →
512x512). One multiply-add counts as 2 FLOPs here; MMSegmentation (fvcore/mmengine) reports
multiply-adds, printed as GMACs. Backbone weights are never downloaded (`pretrained` is dropped); the
model is built on the `meta` device (shapes only: the same count, no memory).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from segaccel.benchmark.flops import count_config, default_shape, load_model_config  # noqa: E402, F401


def count(config: str, shape: tuple[int, int] | None = None, overrides: list[str] | None = None) -> dict:
    """Build the config's model and count its parameters and the FLOPs of one forward (`count_config`)."""
    return count_config(config, shape, overrides)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument(
        "--shape", type=int, nargs=2, metavar=("H", "W"), help="input size (default: from the name)"
    )
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    args = parser.parse_args(argv)
    row = count(args.config, tuple(args.shape) if args.shape else None, args.overrides)
    print(f"config:      {row['config']}")
    print(f"input:       {row['input']}")
    print(
        f"parameters:  {row['params_M']:.2f} M (backbone {row['backbone_params_M']:.2f} M; "
        f"trainable {row['trainable_params_M']:.2f} M)"
    )
    print(
        f"FLOPs:       {row['GFLOPs']:.2f} G  ({row['GMACs']:.2f} GMACs, the figure MMSegmentation reports)"
    )
    return row


if __name__ == "__main__":
    main()
