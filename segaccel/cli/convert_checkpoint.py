"""Convert an existing checkpoint into a segaccel model folder (config.json + model.safetensors + card).

    # a transformers SegFormer (a Hub repo id or a local folder saved by transformers)
    python scripts/convert_checkpoint.py nvidia/segformer-b0-finetuned-ade-512-512 converted/segformer-b0-ade
    # an MMSegmentation model-zoo entry: its checkpoint and its MMSegmentation config (read, never run)
    python scripts/convert_checkpoint.py pspnet_r50-d8_512x1024_80k_cityscapes.pth converted/pspnet \
        --config pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py
    # a 1.x checkpoint carries its training config: no --config needed
    python scripts/convert_checkpoint.py iter_80000.pth converted/mine
    # or our YAML describing the same model
    python scripts/convert_checkpoint.py segformer_mit-b0_ade.pth converted/b0 \
        --config configs/segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.yaml

An existing OUT_DIR is written into only with `--force`, and then only the files this script writes
(config.json, model.safetensors, the model card README.md unless it was written by hand, config.yaml)
are replaced; other files are left alone.

The result loads with `Segmentor.from_pretrained(OUT_DIR)` and can be pushed with
`scripts/push_to_hub.py OUT_DIR REPO_ID`. MMSegmentation checkpoints (1.x Runner files with their
message hub, 0.x files) are read by segaccel's restricted reader: nothing in the file is run, and
neither mmengine nor mmcv is needed. Their class names and palette (checkpoint `meta`) are kept; the
converted config is written as `config.yaml`. After writing, the folder is loaded again and its logits
on a random input compared with the converted model's (printed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from segaccel.config import dump_config
from segaccel.convert import convert_mmseg_state_dict, load_mmseg_checkpoint, read_state_dict
from segaccel.convert.mmseg_zoo import zoo_config
from segaccel.models import Segmentor
from segaccel.registry import MODELS

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Convert a checkpoint into a segaccel model folder.")
    parser.add_argument("source", help="transformers SegFormer repo id/folder, or an MMSegmentation .pth")
    parser.add_argument("out_dir", help="the segaccel model folder to write")
    parser.add_argument(
        "--config",
        help="MMSegmentation checkpoints: its MMSegmentation .py config or our YAML of the same model "
        "(default: the config a 1.x checkpoint carries)",
    )
    parser.add_argument("--revision", help="Hub revision of a transformers repo")
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into an OUT_DIR that already holds files this script writes, replacing them",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for --config")
    return parser.parse_intermixed_args(argv)


def convert_mmseg(path: Path, config: str | None, overrides: list[str]) -> tuple[Segmentor, dict]:
    if path.suffix == ".safetensors":
        weights = convert_mmseg_state_dict(read_state_dict(path))
        ckpt = {"state_dict": weights, "classes": None, "palette": None, "config_text": None}
    else:
        ckpt = load_mmseg_checkpoint(path)
    cfg, notes = zoo_config(ckpt, config, overrides)
    for note in notes:
        print(f"note: {note}")
    model = MODELS.build(cfg["model"], key="model")
    model.load_weights(ckpt["state_dict"], strict=True, source=str(path))
    return model.eval(), cfg


WRITTEN_FILES = ("config.json", "model.safetensors", "README.md", "config.yaml")


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse (before any work) an OUT_DIR that is a file, or that holds files this script would
    replace, unless `--force`."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SystemExit(f"convert_checkpoint.py: {out_dir} exists and is not a folder")
    existing = [name for name in WRITTEN_FILES if (out_dir / name).exists()]
    if existing and not force:
        raise SystemExit(
            f"convert_checkpoint.py: {out_dir} already holds {', '.join(existing)}; nothing was written. "
            "Choose a new folder, or pass --force to replace those files (others are left alone)"
        )


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    source = Path(args.source)
    check_out_dir(Path(args.out_dir), args.force)
    cfg = None
    if source.suffix in PICKLE_SUFFIXES or source.suffix == ".safetensors":
        model, cfg = convert_mmseg(source, args.config, args.overrides)
    else:
        kwargs = {"revision": args.revision} if args.revision else {}
        model = Segmentor.from_pretrained(args.source, **kwargs)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg is not None:  # first, so that the model card shows it
        dump_config(cfg, out_dir / "config.yaml")
    model.save_pretrained(out_dir)

    reloaded = Segmentor.from_pretrained(str(out_dir))
    x = torch.randn(1, int(model.config["backbone"].get("in_channels", 3)), 64, 64)
    with torch.no_grad():
        diff = (reloaded(x) - model(x)).abs().max().item()
    print(f"wrote {out_dir} ({model.num_classes} classes); reloaded logits differ by at most {diff:.3g}")
    return out_dir


def run() -> int:
    """The installed command's entry point."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(run())
