#!/usr/bin/env python
"""Check a dataset before a long training: every bad sample, and a class-frequency table.

    python scripts/check_dataset.py CONFIG [--split train|val|test] [--num-workers N] [--limit N]
        [key=value ...]

Reads every sample of the config's split as training reads it (decoding, image modes, mask size,
reduce_zero_label / label_map, labels in [0, num_classes) or ignore_index), without augmentation,
with a progress bar. Prints the pixels and images per class and lists every bad sample with its
index and problem. Exit status: 0 when every sample is usable, 1 when some are not.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from segaccel.config import load_config  # noqa: E402
from segaccel.data import dataset_from_config  # noqa: E402
from segaccel.data.check import format_report, scan_dataset  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Scan a dataset split for bad samples and class frequencies."
    )
    parser.add_argument("config", help="YAML config file")
    parser.add_argument(
        "--split", default="train", choices=["train", "val", "test"], help="which dataloader's dataset"
    )
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers reading samples")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many samples")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s - %(message)s")
    cfg = load_config(args.config, args.overrides)
    dataset = dataset_from_config(cfg, args.split, training=False)
    report = scan_dataset(dataset, num_workers=args.num_workers, limit=args.limit)
    print(format_report(report, dataset.id2label))
    return 1 if report.bad else 0


if __name__ == "__main__":
    sys.exit(main())
