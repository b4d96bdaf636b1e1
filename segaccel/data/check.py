"""Scanning a dataset before a long training: every bad sample, and how often each class occurs.

`scan_dataset` reads every sample of a split as training would read it (decoding, mode checks,
size check, `reduce_zero_label`/`label_map`, range check) but without the pipeline, collects the
errors instead of stopping at the first, and counts pixels and images per class.
`format_report` renders the result as the tables `scripts/check_dataset.py` prints.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from segaccel.data.seg_dataset import SegDataset


@dataclass
class ScanReport:
    """What `scan_dataset` found. `pixels[c]`/`images[c]`: pixels and images of class `c`."""

    name: str
    split: str
    num_samples: int = 0
    bad: list[tuple[Any, str]] = field(default_factory=list)
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    images: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ignored_pixels: int = 0
    unlabeled: int = 0  # samples without labels (label_column: null)

    def add(self, counts: np.ndarray, ignored: int) -> None:
        if len(counts) > len(self.pixels):
            self.pixels = np.pad(self.pixels, (0, len(counts) - len(self.pixels)))
            self.images = np.pad(self.images, (0, len(counts) - len(self.images)))
        self.pixels[: len(counts)] += counts
        self.images[: len(counts)] += counts > 0
        self.ignored_pixels += ignored


def sample_counts(
    results: dict[str, Any], ignore_index: int, num_classes: int | None
) -> tuple[np.ndarray, int]:
    """Pixels per class of one sample's mask (`num_classes` long, or max label + 1) and its ignored pixels."""
    gt = np.asarray(results.get("gt_seg_map", results.get("pending_gt_seg_map")))
    ignored = gt == ignore_index
    labels = gt[~ignored].astype(np.int64).ravel()
    counts = np.bincount(labels, minlength=num_classes or 0)
    return counts, int(ignored.sum())


class _Scan(torch.utils.data.Dataset):
    """Index → (index, counts, ignored, error): one sample read without the pipeline, errors caught."""

    def __init__(self, dataset: SegDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, int, str | None]:
        try:
            results = self.dataset.load_results(index)
        except Exception as exc:  # every problem is a finding, none stops the scan
            return index, None, 0, _message(exc)
        if self.dataset.label_column is None:
            return index, None, -1, None
        counts, ignored = sample_counts(results, self.dataset.ignore_index, self.dataset.num_classes)
        return index, counts, ignored, None


def _message(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


def _scan_map_style(dataset: SegDataset, num_workers: int, limit: int | None) -> Iterator[tuple]:
    scan = _Scan(dataset)
    indices = range(min(len(scan), limit) if limit else len(scan))
    loader = torch.utils.data.DataLoader(
        scan, batch_size=None, sampler=indices, num_workers=num_workers, collate_fn=lambda x: x
    )
    yield from loader


def _scan_stream(dataset: Any, limit: int | None) -> Iterator[tuple]:
    for position, results, error in dataset.iter_results():
        if limit is not None and position >= limit:
            return
        if error is not None:
            yield position, None, 0, _message(error)
        elif dataset.label_column is None:
            yield position, None, -1, None
        else:
            counts, ignored = sample_counts(results, dataset.ignore_index, dataset.num_classes)
            yield position, counts, ignored, None


def scan_dataset(
    dataset: Any, num_workers: int = 0, limit: int | None = None, progress: bool = True
) -> ScanReport:
    """Read every sample of `dataset` (a `SegDataset`, or a `SegStreamDataset` read once) and report.

    Map-style datasets are read by `num_workers` DataLoader workers; a stream is read in order.
    `limit` stops after that many samples.
    """
    report = ScanReport(name=dataset.name, split=dataset.split)
    if isinstance(dataset, SegDataset):
        total = min(len(dataset), limit) if limit else len(dataset)
        items = _scan_map_style(dataset, num_workers, limit)
    else:
        total = limit
        items = _scan_stream(dataset, limit)
    if dataset.num_classes:
        report.add(np.zeros(dataset.num_classes, np.int64), 0)
    for index, counts, ignored, error in tqdm(items, total=total, desc="check", disable=not progress):
        report.num_samples += 1
        if error is not None:
            report.bad.append((index, error))
        elif ignored < 0:
            report.unlabeled += 1
        else:
            report.add(counts, ignored)
    report.bad.sort(key=lambda item: (str(type(item[0])), item[0]))
    return report


def format_report(report: ScanReport, id2label: dict[int, str] | None = None) -> str:
    """The class-frequency table (pixels and images per class) and the list of bad samples."""
    lines = [
        f"dataset {report.name!r} split {report.split!r}: {report.num_samples} samples read, "
        f"{len(report.bad)} bad"
    ]
    labelled = report.num_samples - len(report.bad) - report.unlabeled
    labelled_pixels = int(report.pixels.sum())
    total_pixels = labelled_pixels + report.ignored_pixels
    if len(report.pixels):
        names = [(id2label or {}).get(c, "") for c in range(len(report.pixels))]
        width = max([len("class")] + [len(n) for n in names])
        lines.append("")
        lines.append(
            f"{'id':>4}  {'class':<{width}}  {'pixels':>14}  {'pixel %':>8}  {'images':>8}  {'image %':>8}"
        )
        for c, name in enumerate(names):
            pixels, images = int(report.pixels[c]), int(report.images[c])
            pixel_share = 100.0 * pixels / labelled_pixels if labelled_pixels else 0.0
            image_share = 100.0 * images / labelled if labelled else 0.0
            flag = "  (never seen)" if images == 0 else ""
            lines.append(
                f"{c:>4}  {name:<{width}}  {pixels:>14,}  {pixel_share:>8.3f}  {images:>8,}  "
                f"{image_share:>8.2f}{flag}"
            )
        ignored_share = 100.0 * report.ignored_pixels / total_pixels if total_pixels else 0.0
        lines.append(
            f"{'':>4}  {'(ignored)':<{width}}  {report.ignored_pixels:>14,}  {ignored_share:>8.3f}  "
            "(% of all pixels; class % are of the labelled ones)"
        )
    if report.unlabeled:
        lines.append(f"{report.unlabeled} samples have no labels (label_column: null)")
    if report.bad:
        lines.append("")
        lines.append(f"{len(report.bad)} bad sample(s):")
        lines.extend(f"  [{index}] {message}" for index, message in report.bad)
    return "\n".join(lines)
