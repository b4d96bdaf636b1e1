"""Samples/s of a config's training pipeline (main process and N DataLoader workers), and ms per step.

The training dataset is read as the runner reads it (decoding, label mapping, the pipeline,
PackSegInputs, collate) through a DataLoader with the training sampler and the loader settings of
`segaccel.data.loader` (worker threads, `worker_init_fn`). Each setting is warmed up (workers
started, prefetch filled) and then timed over `--samples` samples; "per worker" is the rate divided
by the number of workers (the main process when there are none). Compare the rate with what a
training step consumes: batch size / step time.

The per-step table times each part of `dataset[i]` in the main process on the same samples: reading
the row, decoding the image and the label map, label mapping and checks, then every transform of the
pipeline with the sample's own random generator (the draws `dataset[i]` makes). Its times are the
process's CPU time (`time.process_time`), which other programs on a shared machine do not inflate;
with one thread it is what the steps cost on a core of their own. The samples/s table is wall-clock,
plus the CPU-time rate of the main process when it loads alone (`num_workers` 0).

With `on_device: true` transforms in the pipeline (`--cfg-options
train_dataloader.dataset.pipeline.3.on_device=true`), the table also times their `batch_augments`
step in the data preprocessor on `--device`, per sample, batches of `--batch-size`.

`--fake N` replaces the config's source by a folder of N generated JPEG/PNG pairs shaped like it (the
same columns, raw label values as the source stores them, so reduce_zero_label / label_map do their
work): smooth colour fields with noise, like photos, with masks of irregular regions. Without
`--fake-size`, each image's size is drawn like ADE20K's (h 384–512, w 512–683). With `--fake-dir` the
folder is kept and reused by later runs (the same files before and after a change).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import datasets
import numpy as np
import torch
from PIL import Image

from segaccel.benchmark.table import format_table
from segaccel.config import load_config
from segaccel.data import SegDataset, dataset_from_config, seg_collate
from segaccel.data.decode import decode_image, decode_mask
from segaccel.data.loader import worker_init_fn
from segaccel.data.samplers import InfiniteSampler
from segaccel.models.batch_augments import apply_batch_augments, has_batch_augments

ADE20K_SIZES = ((384, 512), (512, 683))  # (h range, w range) of the generated images


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config whose train_dataloader is measured")
    parser.add_argument(
        "--num-workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to measure"
    )
    parser.add_argument("--samples", type=int, default=64, help="samples timed per setting (default 64)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--fake", type=int, default=0, metavar="N", help="generate N samples like the source")
    parser.add_argument(
        "--fake-size", type=int, nargs=2, default=None, metavar=("H", "W"), help="default: ADE20K-like sizes"
    )
    parser.add_argument("--fake-dir", default=None, help="folder of the generated pairs (default: temp)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and OpenCV threads of the main process (default 1)"
    )
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-step table")
    parser.add_argument(
        "--device", default=None, help="where batch_augments run (default: cuda when available, else cpu)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (after the tables)")
    parser.add_argument(
        "--cfg-options", nargs="*", default=[], metavar="key=value", help="dotted config overrides"
    )


def fake_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A photo-like (H, W, 3) uint8 image: a smooth random colour field plus fine noise."""
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    noisy = smooth + rng.normal(0.0, 8.0, (h, w, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def fake_mask(rng: np.random.Generator, h: int, w: int, values: np.ndarray, regions: int = 10) -> np.ndarray:
    """An (H, W) label map of `regions` irregular regions (nearest seed point), labels drawn from `values`."""
    gh, gw = max(h // 8, 1), max(w // 8, 1)
    yy, xx = np.mgrid[0:gh, 0:gw]
    seeds = rng.uniform((0, 0), (gh, gw), size=(regions, 2))
    nearest = ((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2).argmin(-1)
    labels = rng.choice(values, size=regions)
    small = Image.fromarray(labels[nearest].astype(np.uint8))
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST))


def raw_label_values(dataset_cfg: dict[str, Any], num_classes: int) -> np.ndarray:
    """The values the source would store: label_map keys, 0..num_classes with reduce_zero_label, else ids."""
    if dataset_cfg.get("label_map"):
        return np.array(sorted(int(k) for k in dataset_cfg["label_map"] if 0 <= int(k) <= 255))
    if dataset_cfg.get("reduce_zero_label"):
        return np.arange(num_classes + 1)
    return np.arange(num_classes)


def write_fake_source(
    dataset_cfg: dict[str, Any],
    num: int,
    size: tuple[int, int] | None,
    num_classes: int,
    folder: Path,
    seed: int = 0,
) -> dict[str, Any]:
    """Write `num` JPEG/PNG pairs into `folder/train` (an image folder with `metadata.jsonl`); their config.

    `size` (h, w) fixes every image's size; None draws each like ADE20K's. A folder that already holds
    `num` pairs is reused as it is.
    """
    label_column = dataset_cfg.get("label_column") or "label"
    split_dir = folder / "train"
    metadata = split_dir / "metadata.jsonl"
    if not (metadata.is_file() and len(metadata.read_text().splitlines()) == num):
        (split_dir / "images").mkdir(parents=True, exist_ok=True)
        (split_dir / "labels").mkdir(parents=True, exist_ok=True)
        values = raw_label_values(dataset_cfg, num_classes)
        rng = np.random.default_rng(seed)
        lines = []
        for i in range(num):
            (h0, h1), (w0, w1) = ADE20K_SIZES
            h, w = size or (int(rng.integers(h0, h1 + 1)), int(rng.integers(w0, w1 + 1)))
            image, label = f"images/{i:05d}.jpg", f"labels/{i:05d}.png"
            Image.fromarray(fake_image(rng, h, w)).save(split_dir / image, quality=90)
            Image.fromarray(fake_mask(rng, h, w, values)).save(split_dir / label)
            lines.append(json.dumps({"file_name": image, f"{label_column}_file_name": label}))
        metadata.write_text("\n".join(lines) + "\n")
    source_keys = ("path", "name", "data_dir", "data_files", "revision", "streaming", "split")
    out = {k: v for k, v in dataset_cfg.items() if k not in source_keys}
    out.update(path=str(folder), split="train", validation_split=0)
    out.update(image_column="image", label_column=label_column)  # an image folder calls its images `image`
    return out


def worker_loader(dataset: Any, batch_size: int, num_workers: int, seed: int) -> torch.utils.data.DataLoader:
    """A DataLoader over `dataset` as training reads it (InfiniteSampler, seg_collate, worker settings)."""
    sampler = InfiniteSampler(len(dataset), batch_size, seed=seed) if hasattr(dataset, "__len__") else None
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=seg_collate,
        worker_init_fn=worker_init_fn if num_workers else None,
    )


def measure(dataset: Any, batch_size: int, num_workers: int, samples: int, seed: int) -> tuple[float, float]:
    """(wall-clock, main-process CPU-time) samples/s through a DataLoader with `num_workers` workers."""
    batches = iter(worker_loader(dataset, batch_size, num_workers, seed))
    for _ in range(max(2, 2 * num_workers)):  # start the workers and fill their prefetch queues
        next(batches)
    timed = -(-samples // batch_size)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(timed):
        next(batches)
    elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    del batches
    return timed * batch_size / elapsed, timed * batch_size / max(elapsed_cpu, 1e-9)


def step_breakdown(dataset: SegDataset, samples: int, epoch: int = 0) -> dict[str, float]:
    """Mean ms per sample of each step of `dataset[(epoch, i)]` for the first `samples` indices (cycled).

    Steps: `read row` (the Arrow row, images undecoded), `decode image`, `decode label`, `labels (map,
    check)` (reduce_zero_label / label_map and the class check), then one entry per transform (by
    class name, numbered when repeated), each run with the sample's own generator. Times are CPU
    time of this process.
    """
    clock = time.process_time
    totals: dict[str, float] = defaultdict(float)
    names = []
    for t in dataset.pipeline.transforms:
        name = type(t).__name__
        names.append(name if name not in names else f"{name} ({names.count(name) + 1})")
    for k in range(samples):
        index = k % len(dataset)
        start = clock()
        row = dataset.read_row(index)
        after_read = clock()
        decode_image(row[dataset.image_column])
        after_image = clock()
        totals["read row"] += after_read - start
        totals["decode image"] += after_image - after_read
        if dataset.label_column is not None:
            raw = decode_mask(row[dataset.label_column])
            after_label = clock()
            dataset.map_and_check_labels(raw, index)
            totals["decode label"] += after_label - after_image
            totals["labels (map, check)"] += clock() - after_label
        results = dataset.row_results(row, index, str(index))  # the same work again, untimed
        rng = np.random.default_rng([dataset.seed, epoch, index])
        for name, t in zip(names, dataset.pipeline.transforms):
            start = clock()
            results = t(results, rng=rng)
            totals[name] += clock() - start
    return {name: 1000 * total / samples for name, total in totals.items()}


def batch_augment_ms(
    dataset: SegDataset, batch_size: int, samples: int, device: torch.device
) -> float | None:
    """Mean ms per sample of the data preprocessor's `batch_augments` step on `device` (None: nothing left).

    Times `apply_batch_augments` on collated batches of the first `samples` samples, synchronising the
    device; on a CPU device it is CPU time.
    """
    batches = [
        seg_collate([dataset[(0, i % len(dataset))] for i in range(k, k + batch_size)])
        for k in range(0, samples, batch_size)
    ]
    if not any(has_batch_augments(b["data_samples"]) for b in batches):
        return None
    apply_batch_augments(batches[0]["inputs"], batches[0]["data_samples"], device)  # warm-up
    cpu = device.type == "cpu"
    total = 0.0
    for batch in batches:
        if not cpu:
            torch.cuda.synchronize(device)
        start = time.process_time() if cpu else time.perf_counter()
        apply_batch_augments(batch["inputs"], batch["data_samples"], device)
        if not cpu:
            torch.cuda.synchronize(device)
        total += (time.process_time() if cpu else time.perf_counter()) - start
    return 1000 * total / (len(batches) * batch_size)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    cfg = load_config(args.config, args.cfg_options)
    loader_cfg = cfg.get("train_dataloader") or {}
    batch_size = args.batch_size or int(loader_cfg.get("batch_size", 2))
    source = "the config's source"
    tmp = None
    if args.fake:
        dataset_cfg = dict(loader_cfg["dataset"])
        num_classes = ((cfg.get("model") or {}).get("decode_head") or {}).get("num_classes") or len(
            dataset_cfg.get("id2label") or []
        )
        if not num_classes:
            raise SystemExit("--fake needs the number of classes (model.decode_head.num_classes or id2label)")
        if args.fake_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="segaccel-bench-data-")
        folder = Path(args.fake_dir or tmp.name)
        size = tuple(args.fake_size) if args.fake_size else None
        cfg["train_dataloader"]["dataset"] = write_fake_source(
            dataset_cfg, args.fake, size, int(num_classes), folder, args.seed
        )
        (h0, h1), (w0, w1) = ((size[0],) * 2, (size[1],) * 2) if size else ADE20K_SIZES
        shape = f"{h0}x{w0}" if size else f"{h0}-{h1} x {w0}-{w1} (h x w)"
        source = f"{args.fake} generated {shape} JPEG images, {num_classes} classes, in {folder}"
    datasets.disable_progress_bars()
    dataset = dataset_from_config(cfg, "train")
    steps = [t["type"] for t in loader_cfg["dataset"].get("pipeline") or []]
    print(f"{args.config}: training pipeline {' > '.join(steps) or '(PackSegInputs)'}")
    print(f"data: {source}; batch size {batch_size}; {args.samples} samples timed per setting")
    breakdown = None
    if isinstance(dataset, SegDataset) and not args.no_breakdown:
        step_breakdown(dataset, min(4, args.samples))  # warm-up: imports, first-call allocations
        breakdown = step_breakdown(dataset, args.samples)
        table = [{"step": name, "cpu_ms_per_sample": round(ms, 2)} for name, ms in breakdown.items()]
        table.append({"step": "total", "cpu_ms_per_sample": round(sum(breakdown.values()), 2)})
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        on_device = batch_augment_ms(dataset, batch_size, args.samples, device)
        if on_device is not None:
            kind = "CPU" if device.type == "cpu" else "wall"
            step = f"(then batch_augments on {device.type}, {kind} ms)"
            table.append({"step": step, "cpu_ms_per_sample": round(on_device, 2)})
            breakdown[f"batch_augments ({device.type})"] = on_device
        print(format_table(table))
    rows = []
    for workers in args.num_workers:
        rate, cpu_rate = measure(dataset, batch_size, workers, args.samples, args.seed)
        rows.append(
            {
                "num_workers": workers,
                "samples_per_s": round(rate, 1),
                "per_worker": round(rate / max(workers, 1), 1),
                "ms_per_sample": round(1000 / rate * max(workers, 1), 1),
                "cpu_samples_per_s": round(cpu_rate, 1) if workers == 0 else None,
            }
        )
    print(format_table(rows))
    print(
        f"(main process: {torch.get_num_threads()} torch / {cv2.getNumThreads()} OpenCV threads; "
        "DataLoader workers: 1 torch thread, OpenCV threads off)"
    )
    if args.json:
        summary = {
            "config": args.config,
            "data": source,
            "batch_size": batch_size,
            "samples": args.samples,
            "samples_per_s": {str(r["num_workers"]): r["samples_per_s"] for r in rows},
            "cpu_samples_per_s": next((r["cpu_samples_per_s"] for r in rows if r["num_workers"] == 0), None),
            "cpu_ms_per_step": {k: round(v, 3) for k, v in (breakdown or {}).items()},
        }
        print(json.dumps(summary))
    if tmp is not None:
        tmp.cleanup()
    return rows
