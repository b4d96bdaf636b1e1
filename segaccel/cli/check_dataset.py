"""Check a dataset before a long training: every bad sample, and a class-frequency table.

    segaccel check-dataset CONFIG [--split train|validation|test] [--dataset PATH_OR_HUB_ID]
        [--num-workers N] [--limit N] [key=value ...]

Reads every sample of the config's split as training reads it (decoding, image modes, mask size,
reduce_zero_label / label_map, labels in [0, num_classes) or ignore_index), without augmentation,
with a progress bar. Prints the pixels and images per class and lists every bad sample with its
index and problem. Exit status: 0 when every sample is usable, 1 when some are not.
"""

from __future__ import annotations

import argparse
import logging
import sys

from segaccel.cli.common import (
    LOADER_OF_SPLIT,
    add_overrides_argument,
    load_run_config,
    parse_command_line,
    split_argument,
)
from segaccel.data import dataset_from_config
from segaccel.data.check import format_report, scan_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Scan a dataset split for bad samples and class frequencies."
    )
    parser.add_argument(
        "config", help="a YAML config file, or a shipped config's name (configs/quickstart.yaml)"
    )
    parser.add_argument(
        "--dataset", metavar="PATH_OR_HUB_ID", help="read this dataset (as `segaccel train --dataset`)"
    )
    split_argument(parser)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers reading samples")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many samples")
    add_overrides_argument(parser)
    return parse_command_line(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s - %(message)s")
    cfg = load_run_config(args.config, args.overrides, args.dataset)
    dataset = dataset_from_config(cfg, LOADER_OF_SPLIT[args.split], training=False)
    report = scan_dataset(dataset, num_workers=args.num_workers, limit=args.limit)
    print(format_report(report, dataset.id2label))
    return 1 if report.bad else 0


def run() -> int:
    """The installed command's entry point."""
    return int(main() or 0)


if __name__ == "__main__":
    sys.exit(run())
