#!/usr/bin/env python
"""Parameters and FLOPs of a config's model (MMSegmentation's tools/analysis_tools/get_flops.py).

    python scripts/get_flops.py configs/segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.yaml
    python scripts/get_flops.py CONFIG --shape 512 1024

FLOPs are counted by `torch.utils.flop_counter` over one forward in `tensor` mode (backbone, neck and
decode head; no auxiliary head, no final resize) on a `(1, 3, H, W)` input, attention on the CPU
included (`segaccel.benchmark.flops`); the input size defaults
to the crop size in the config's file name (`..._ade20k-512x512.yaml` → 512x512). One multiply-add
counts as 2 FLOPs here; MMSegmentation (fvcore/mmengine) reports multiply-adds, printed as GMACs.
Backbone weights are never downloaded (`pretrained` is dropped).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from segaccel.benchmark.flops import forward_flops  # noqa: E402
from segaccel.config import load_config, merge  # noqa: E402


def default_shape(config: str) -> tuple[int, int]:
    """`(h, w)` from a name ending in `-{h}x{w}.yaml`, else (512, 512)."""
    match = re.search(r"-(\d+)x(\d+)\.ya?ml$", config)
    return (int(match.group(1)), int(match.group(2))) if match else (512, 512)


def load_model_config(path: str, overrides: list[str] | None = None) -> dict:
    """The config; if a `_base_` dataset recipe is missing, the rest of it (the model needs no data)."""
    try:
        return load_config(path, overrides or [])
    except FileNotFoundError:
        import yaml

        from segaccel.config import apply_overrides

        def partial(p: Path) -> dict:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            bases = raw.pop("_base_", [])
            cfg: dict = {}
            for base in [bases] if isinstance(bases, str) else bases:
                if (p.parent / base).is_file():
                    cfg = merge(cfg, partial(p.parent / base))
                elif "datasets" not in base:
                    raise FileNotFoundError(f"config file {p.parent / base} not found (a _base_ of {p})")
                else:
                    print(
                        f"note: {p.parent / base} not found; counting the model without it", file=sys.stderr
                    )
            return merge(cfg, raw)

        return apply_overrides(partial(Path(path)), overrides or [])


def count(config: str, shape: tuple[int, int] | None = None, overrides: list[str] | None = None) -> dict:
    """Build the config's model and count its parameters and the FLOPs of one forward."""
    import segaccel.models  # noqa: F401  (registers the model parts)
    from segaccel.registry import MODELS

    cfg = load_model_config(config, overrides)
    model_cfg = dict(cfg["model"])
    backbone = dict(model_cfg["backbone"])
    if "pretrained" in backbone:
        backbone["pretrained"] = None
    model_cfg["backbone"] = backbone
    model_cfg.setdefault("type", "Segmentor")
    model = MODELS.build(model_cfg, key="model").eval()
    h, w = shape or default_shape(config)
    params = sum(p.numel() for p in model.parameters())
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops = forward_flops(model, (h, w))
    return {
        "config": config,
        "input": f"1x3x{h}x{w}",
        "params_M": params / 1e6,
        "backbone_params_M": backbone_params / 1e6,
        "trainable_params_M": trainable / 1e6,
        "GFLOPs": flops / 1e9,
        "GMACs": flops / 2e9,
    }


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
