"""Samples/s of a config's training pipeline, in the main process and with N DataLoader workers.

The training dataset is read as the runner reads it (decoding, label mapping, the pipeline,
PackSegInputs, collate) through a DataLoader with the training sampler. Each setting is warmed up
(workers started, prefetch filled) and then timed over `--samples` samples; "per worker" is the
rate divided by the number of workers (the main process when there are none). Compare the rate
with what a training step consumes: batch size / step time.

`--fake N` replaces the config's source by N generated samples shaped like it — the same columns,
raw label values as the source stores them (so reduce_zero_label / label_map do their work),
`--fake-size` images saved as JPEG (smooth colour fields with noise, like photos) with PNG masks of
irregular regions — for a figure without downloading the dataset.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image

from segaccel.benchmark.table import format_table
from segaccel.config import load_config
from segaccel.data import dataset_from_config, seg_collate
from segaccel.data.samplers import InfiniteSampler


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config whose train_dataloader is measured")
    parser.add_argument(
        "--num-workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to measure"
    )
    parser.add_argument("--samples", type=int, default=64, help="samples timed per setting (default 64)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--fake", type=int, default=0, metavar="N", help="generate N samples like the source")
    parser.add_argument("--fake-size", type=int, nargs=2, default=(512, 683), metavar=("H", "W"))
    parser.add_argument(
        "--fake-dir", default=None, help="where to write the generated parquet (default: temp)"
    )
    parser.add_argument("--seed", type=int, default=0)
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
    size: tuple[int, int],
    num_classes: int,
    folder: Path,
    seed: int = 0,
) -> dict[str, Any]:
    """Write `num` generated samples as parquet in `folder`; the dataset config that reads them."""
    image_column = dataset_cfg.get("image_column") or "image"
    label_column = dataset_cfg.get("label_column") or "label"
    values = raw_label_values(dataset_cfg, num_classes)
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(num):
        h, w = size
        buf = io.BytesIO()
        Image.fromarray(fake_image(rng, h, w)).save(buf, format="JPEG", quality=90)
        images.append({"bytes": buf.getvalue(), "path": f"fake_{i:05d}.jpg"})
        buf = io.BytesIO()
        Image.fromarray(fake_mask(rng, h, w, values)).save(buf, format="PNG")
        labels.append({"bytes": buf.getvalue(), "path": None})
    features = datasets.Features({image_column: datasets.Image(), label_column: datasets.Image()})
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "train.parquet"
    data = datasets.Dataset.from_dict({image_column: images, label_column: labels}, features=features)
    data.to_parquet(str(file))
    source_keys = ("path", "name", "data_dir", "data_files", "revision", "streaming", "split")
    out = {k: v for k, v in dataset_cfg.items() if k not in source_keys}
    out.update(path="parquet", data_files={"train": str(file)}, split="train", validation_split=0)
    out.update(image_column=image_column, label_column=label_column)
    return out


def measure(dataset: Any, batch_size: int, num_workers: int, samples: int, seed: int) -> float:
    """Samples/s of `dataset` through a DataLoader with `num_workers` workers, after a warm-up."""
    sampler = InfiniteSampler(len(dataset), batch_size, seed=seed) if hasattr(dataset, "__len__") else None
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=seg_collate
    )
    batches = iter(loader)
    for _ in range(max(2, 2 * num_workers)):  # start the workers and fill their prefetch queues
        next(batches)
    timed = -(-samples // batch_size)
    start = time.perf_counter()
    for _ in range(timed):
        next(batches)
    elapsed = time.perf_counter() - start
    del batches
    return timed * batch_size / elapsed


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
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
        cfg["train_dataloader"]["dataset"] = write_fake_source(
            dataset_cfg, args.fake, tuple(args.fake_size), int(num_classes), folder, args.seed
        )
        h, w = args.fake_size
        source = f"{args.fake} generated {h}x{w} JPEG images, {num_classes} classes"
    datasets.disable_progress_bars()
    dataset = dataset_from_config(cfg, "train")
    steps = [t["type"] for t in loader_cfg["dataset"].get("pipeline") or []]
    print(f"{args.config}: training pipeline {' > '.join(steps) or '(PackSegInputs)'}")
    print(f"data: {source}; batch size {batch_size}; {args.samples} samples timed per setting")
    rows = []
    for workers in args.num_workers:
        rate = measure(dataset, batch_size, workers, args.samples, args.seed)
        rows.append(
            {
                "num_workers": workers,
                "samples_per_s": round(rate, 1),
                "per_worker": round(rate / max(workers, 1), 1),
                "ms_per_sample": round(1000 / rate * max(workers, 1), 1),
            }
        )
    print(format_table(rows))
    print(f"(main process torch threads: {torch.get_num_threads()}; DataLoader workers use 1 each)")
    if tmp is not None:
        tmp.cleanup()
    return rows
