"""IoUMetric against a plain-numpy per-image histogram (the way `evaluate`'s mean_iou works).

Both methods start from the same label and prediction tensors held in memory (no data loading,
no model) and end with the dataset-level per-class areas and the summary; each is timed as the
median of `--repeats` runs, alternating the two, in the same process. The two results are checked
to be identical before anything is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch

from segaccel.evaluation import IoUMetric
from segaccel.structures import PixelData, SegDataSample

DTYPES = {"int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-images", type=int, default=100, help="predictions to evaluate (default 100)")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--num-classes", type=int, default=150, help="default 150 (ADE20K)")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="samples per IoUMetric.process call (as a val batch)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each method; the median counts")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="int64",
        help="tensor dtype of labels and predictions (int64 is what PackSegInputs and argmax give)",
    )
    parser.add_argument("--device", default="cpu", help="device of IoUMetric's tensors (cpu, cuda, ...)")
    parser.add_argument("--seed", type=int, default=0)


def make_data(
    num_images: int, size: tuple[int, int], num_classes: int, dtype: torch.dtype, seed: int = 0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Labels (5 % ignored as 255) and predictions that agree with them on about 70 % of the pixels."""
    g = torch.Generator().manual_seed(seed)
    labels, preds = [], []
    for _ in range(num_images):
        label = torch.randint(0, num_classes, (1, *size), generator=g)
        pred = torch.where(
            torch.rand(label.shape, generator=g) < 0.7,
            label,
            torch.randint(0, num_classes, label.shape, generator=g),
        )
        label[torch.rand(label.shape, generator=g) < 0.05] = 255
        labels.append(label.to(dtype).contiguous())
        preds.append(pred.to(dtype).contiguous())
    return labels, preds


def numpy_per_image(
    labels: list[torch.Tensor], preds: list[torch.Tensor], num_classes: int, ignore_index: int = 255
) -> tuple[np.ndarray, dict[str, float]]:
    """evaluate's mean_iou, in plain numpy: three `np.histogram` calls per image, summed, then the means.

    Returns `(areas (4, C): intersect, union, pred, label; {"aAcc", "mIoU", "mAcc"} in percent)`.
    """
    total = np.zeros((4, num_classes), dtype=np.int64)
    for label_t, pred_t in zip(labels, preds):
        label, pred = label_t.numpy(), pred_t.numpy()
        mask = label != ignore_index
        pred, label = pred[mask], label[mask]
        intersect = pred[pred == label]
        bins, value_range = num_classes, (0, num_classes - 1)
        area_intersect = np.histogram(intersect, bins=bins, range=value_range)[0]
        area_pred = np.histogram(pred, bins=bins, range=value_range)[0]
        area_label = np.histogram(label, bins=bins, range=value_range)[0]
        total += np.stack([area_intersect, area_pred + area_label - area_intersect, area_pred, area_label])
    intersect, union, _, area_label = total.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        summary = {
            "aAcc": float(intersect.sum() / area_label.sum() * 100),
            "mIoU": float(np.nanmean(intersect / union) * 100),
            "mAcc": float(np.nanmean(intersect / area_label) * 100),
        }
    return total, summary


def iou_metric(samples: list[SegDataSample], num_classes: int, batch_size: int) -> IoUMetric:
    """Process `samples` in batches of `batch_size` and compute (the timed part of IoUMetric)."""
    metric = IoUMetric(num_classes=num_classes)
    for start in range(0, len(samples), batch_size):
        metric.process(samples[start : start + batch_size])
    metric.compute()
    return metric


def _areas(metric: IoUMetric) -> np.ndarray:
    return np.stack(list(metric.total_areas().values()))


def _timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    size = tuple(args.size)
    dtype = DTYPES[args.dtype]
    device = torch.device(args.device)
    labels, preds = make_data(args.num_images, size, args.num_classes, dtype, args.seed)
    samples = [
        SegDataSample(
            {"img_id": str(i)},
            gt_sem_seg=PixelData(label.to(device)),
            pred_sem_seg=PixelData(pred.to(device)),
        )
        for i, (label, pred) in enumerate(zip(labels, preds))
    ]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    # Same numbers first: the per-class areas must be identical, the summaries equal.
    areas, reference = numpy_per_image(labels, preds, args.num_classes)
    metric = iou_metric(samples, args.num_classes, args.batch_size)
    if not np.array_equal(_areas(metric), areas):
        raise AssertionError("IoUMetric and the numpy reference disagree on the per-class areas")
    for key, value in reference.items():
        if not np.isclose(metric.summary_unrounded[key], value, rtol=1e-9, atol=0):
            raise AssertionError(f"{key}: IoUMetric {metric.summary_unrounded[key]} vs numpy {value}")

    times: dict[str, list[float]] = {"numpy": [], "iou": []}
    for _ in range(args.repeats):  # alternate, so that a busy moment hurts both alike
        times["numpy"].append(_timed(lambda: numpy_per_image(labels, preds, args.num_classes), lambda: None))
        times["iou"].append(_timed(lambda: iou_metric(samples, args.num_classes, args.batch_size), sync))
    pairs = args.num_images * size[0] * size[1]
    base = statistics.median(times["numpy"])
    rows = []
    for key, name in (
        ("numpy", "numpy per-image np.histogram (evaluate's mean_iou)"),
        ("iou", f"IoUMetric ({device.type}, batch {args.batch_size})"),
    ):
        median = statistics.median(times[key])
        rows.append(
            {
                "method": name,
                "median_ms": round(median * 1000, 1),
                "min_ms": round(min(times[key]) * 1000, 1),
                "Mpairs_per_s": round(pairs / median / 1e6, 1),
                "speedup": round(base / median, 1),
            }
        )
    print(
        f"{args.num_images} predictions of {size[0]}x{size[1]}, {args.num_classes} classes, {args.dtype} "
        f"({pairs / 1e6:.1f} M label pairs), median of {args.repeats} runs, torch threads "
        f"{torch.get_num_threads()}; mIoU {reference['mIoU']:.2f} by both"
    )
    print(_table(rows))
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    header = list(rows[0])
    cells = [header, *([str(row[k]) for k in header] for row in rows)]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
