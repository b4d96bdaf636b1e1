#!/usr/bin/env python
"""Look at what a training pipeline feeds the model: a PNG grid of transformed samples.

    python scripts/browse_dataset.py CONFIG [--split train|val|test] [--num N] [--out FILE]
        [--columns C] [--epoch E] [key=value ...]

Each sample is shown as the image after the pipeline and the same image with its mask coloured in
(ignored pixels left as they are), captioned with its id, size and flip; a legend names the classes
present. The augmentation is the one training uses for samples 0..N-1 at epoch E.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from segaccel.config import load_config  # noqa: E402
from segaccel.data import dataset_from_config  # noqa: E402
from segaccel.data.browse import browse_grid  # noqa: E402
from segaccel.data.builder import LOADER_KEYS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write a grid of transformed samples with mask overlays.")
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--split", default="train", choices=["train", "val", "test"], help="which dataloader")
    parser.add_argument("--num", type=int, default=8, help="number of samples")
    parser.add_argument("--out", default="browse.png", help="PNG file to write")
    parser.add_argument("--columns", type=int, default=2, help="samples per row")
    parser.add_argument("--epoch", type=int, default=0, help="the epoch whose augmentation to show")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    dataset = dataset_from_config(cfg, args.split)
    if hasattr(dataset, "__getitem__"):
        outputs = [dataset[(args.epoch, i)] for i in range(min(args.num, len(dataset)))]
    else:  # a stream: its first samples
        outputs = list(itertools.islice(iter(dataset), args.num))
    dataset_cfg = cfg[LOADER_KEYS[args.split]]["dataset"]
    names = [dataset.id2label[i] for i in sorted(dataset.id2label)] if dataset.id2label else None
    image = browse_grid(outputs, palette=dataset_cfg.get("palette"), class_names=names, columns=args.columns)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    print(f"wrote {out} ({len(outputs)} samples of {dataset.name!r} split {dataset.split!r})")
    return out


if __name__ == "__main__":
    main()
