"""Look at what a training pipeline feeds the model: a PNG grid of transformed samples.

    segaccel browse-dataset CONFIG [--split train|validation|test] [--dataset PATH_OR_HUB_ID]
        [--num N] [--out FILE] [--columns C] [--epoch E] [key=value ...]

Each sample is shown as the image after the pipeline and the same image with its mask coloured in
(ignored pixels left as they are), captioned with its id, size and flip; a legend names the classes
present. The augmentation is the one training uses for samples 0..N-1 at epoch E.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from segaccel.cli.common import (
    LOADER_OF_SPLIT,
    add_overrides_argument,
    load_run_config,
    parse_command_line,
    split_argument,
)
from segaccel.data import dataset_from_config
from segaccel.data.browse import browse_grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write a grid of transformed samples with mask overlays.")
    parser.add_argument(
        "config", help="a YAML config file, or a shipped config's name (configs/quickstart.yaml)"
    )
    parser.add_argument(
        "--dataset", metavar="PATH_OR_HUB_ID", help="read this dataset (as `segaccel train --dataset`)"
    )
    split_argument(parser)
    parser.add_argument("--num", type=int, default=8, help="number of samples")
    parser.add_argument("--out", default="browse.png", help="PNG file to write")
    parser.add_argument("--columns", type=int, default=2, help="samples per row")
    parser.add_argument("--epoch", type=int, default=0, help="the epoch whose augmentation to show")
    add_overrides_argument(parser)
    return parse_command_line(parser, argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    cfg = load_run_config(args.config, args.overrides, args.dataset)
    dataset = dataset_from_config(cfg, LOADER_OF_SPLIT[args.split])
    if hasattr(dataset, "__getitem__"):
        outputs = [dataset[(args.epoch, i)] for i in range(min(args.num, len(dataset)))]
    else:  # a stream: its first samples
        outputs = list(itertools.islice(iter(dataset), args.num))
    dataset_cfg = cfg[LOADER_OF_SPLIT[args.split]]["dataset"]
    names = [dataset.id2label[i] for i in sorted(dataset.id2label)] if dataset.id2label else None
    image = browse_grid(outputs, palette=dataset_cfg.get("palette"), class_names=names, columns=args.columns)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    print(f"wrote {out} ({len(outputs)} samples of {dataset.name!r} split {dataset.split!r})")
    return out


def run() -> int:
    """The installed command's entry point."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(run())
