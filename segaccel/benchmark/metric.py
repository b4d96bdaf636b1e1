"""IoUMetric against a plain-numpy per-image histogram (the way `evaluate`'s mean_iou works).

With `--padding-model MODEL` it measures instead how much padding inside mixed-size validation
batches changes a model's predictions (see `padding_effect`).

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

from segaccel.benchmark.table import format_table
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
    parser.add_argument(
        "--padding-model",
        help="a model folder or Hub id: measure how padding in mixed-size batches changes its predictions",
    )
    parser.add_argument(
        "--padding-crops",
        type=int,
        nargs=3,
        default=(96, 32, 200),
        metavar=("SIDE", "MIN", "N"),
        help="synthetic validation images of SIDE x SIDE cropped to random sizes in [MIN, SIDE], N of them",
    )


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


def padding_effect(
    model: torch.nn.Module, side: int = 96, min_size: int = 32, num_images: int = 200, batch_size: int = 8
) -> dict[str, Any]:
    """Segment synthetic validation crops alone and in mixed-size batches; compare the predictions.

    Images are `side x side` synthetic validation images (seed 1) cropped to random sizes in
    `[min_size, side]`. Alone, an image is padded only to the preprocessor's `size_divisor`; in a
    batch, to the batch's largest image. Returns the fraction of pixels whose class changes (over
    all images, and over the images a batch padded further than they are padded alone), the mean
    and max change of the class probabilities, and the summary both ways.
    """
    from segaccel.data.synthetic import load_synthetic_dataset

    rng = np.random.default_rng(0)
    rows = load_synthetic_dataset(num_train=1, num_val=num_images, image_size=(side, side), seed=1)[
        "validation"
    ]
    items = []
    for row in rows:
        image, label = np.asarray(row["image"].convert("RGB")), np.asarray(row["label"]).astype(np.int64)
        h, w = rng.integers(min_size, side + 1, size=2)
        y, x = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
        items.append((image[y : y + h, x : x + w], label[y : y + h, x : x + w]))

    def predict(group: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[SegDataSample], tuple[int, int]]:
        inputs = [torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))) for img, _ in group]
        samples = [
            SegDataSample({"ori_shape": img.shape[:2]}, gt_sem_seg=PixelData(torch.from_numpy(lab)))
            for img, lab in group
        ]
        with torch.no_grad():
            data = model.data_preprocessor({"inputs": inputs, "data_samples": samples})
            return model.predict(data["inputs"], data["data_samples"]), tuple(data["inputs"].shape[-2:])

    model.eval()
    alone, batched = IoUMetric(model.num_classes), IoUMetric(model.num_classes)
    changed = total = grown = changed_grown = total_grown = 0
    sum_diff, max_diff = 0.0, 0.0
    for start in range(0, len(items), batch_size):
        group = items[start : start + batch_size]
        outputs, batch_shape = predict(group)
        batched.process(outputs)
        for item, out in zip(group, outputs):
            single, own_shape = predict([item])
            alone.process(single)
            diff = (single[0].seg_logits.data.softmax(0) - out.seg_logits.data.softmax(0)).abs()
            sum_diff += diff.sum().item() / diff.shape[0]
            max_diff = max(max_diff, diff.max().item())
            flips = int((single[0].pred_sem_seg.data != out.pred_sem_seg.data).sum())
            changed += flips
            total += item[1].size
            if own_shape != batch_shape:
                grown += 1
                changed_grown += flips
                total_grown += item[1].size
    return {
        "images": len(items),
        "padded_further_in_batch": grown,
        "changed_pixels": changed / total,
        "changed_pixels_of_those": changed_grown / max(total_grown, 1),
        "mean_prob_diff": sum_diff / total,
        "max_prob_diff": max_diff,
        "alone": alone.compute(),
        "batched": batched.compute(),
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.padding_model:
        from segaccel.models import Segmentor

        side, min_size, num_images = args.padding_crops
        model = Segmentor.from_pretrained(args.padding_model)
        result = padding_effect(model, side, min_size, num_images, args.batch_size)
        print(
            f"{result['images']} synthetic crops of [{min_size}, {side}] px, batches of {args.batch_size}: "
            f"{result['padded_further_in_batch']} padded further in their batch than alone; pixels whose "
            f"class changes: {result['changed_pixels']:.2%} of all, {result['changed_pixels_of_those']:.2%} "
            f"of those images; probability change mean {result['mean_prob_diff']:.2e}, "
            f"max {result['max_prob_diff']:.3f}\nalone:   {result['alone']}\nbatched: {result['batched']}"
        )
        return [result]
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
    print(format_table(rows))
    return rows
