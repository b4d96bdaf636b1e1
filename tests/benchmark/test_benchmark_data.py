"""`scripts/benchmark.py data`: generated pairs, the per-step table, `--json`; speed is never asserted."""

import argparse
import json

import numpy as np
from PIL import Image

from segaccel.benchmark import data
from segaccel.config import load_config
from segaccel.data import SegDataset, dataset_from_config

CONFIG = "configs/segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.yaml"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    data.add_arguments(parser)
    return parser.parse_args([CONFIG, *argv])


def test_the_generated_folder_is_ade20k_like_and_reused(tmp_path):
    cfg = load_config(CONFIG)
    dataset_cfg = data.write_fake_source(cfg["train_dataloader"]["dataset"], 6, None, 150, tmp_path, seed=1)
    files = sorted((tmp_path / "train" / "images").iterdir())
    sizes = [Image.open(f).size for f in files]  # (w, h)
    assert len(files) == 6 and all(512 <= w <= 683 and 384 <= h <= 512 for w, h in sizes)
    masks = [np.asarray(Image.open(f)) for f in sorted((tmp_path / "train" / "labels").iterdir())]
    assert all(m.dtype == np.uint8 and m.max() <= 150 for m in masks)  # raw ADE20K values: 0 = other
    assert dataset_cfg["label_column"] == "annotation" and dataset_cfg["reduce_zero_label"] is True
    stamp = files[0].stat().st_mtime_ns
    data.write_fake_source(cfg["train_dataloader"]["dataset"], 6, None, 150, tmp_path, seed=1)
    assert files[0].stat().st_mtime_ns == stamp  # the same files again: before/after runs compare alike
    cfg["train_dataloader"]["dataset"] = dataset_cfg
    dataset = dataset_from_config(cfg, "train")
    assert isinstance(dataset, SegDataset) and len(dataset) == 6
    assert dataset[0]["inputs"].shape == (3, 512, 512)  # the ADE20K pipeline's crop


def test_json_has_samples_per_second_by_worker_count_and_every_step(tmp_path, capsys):
    args = parse("--fake", "4", "--fake-dir", str(tmp_path), "--samples", "4", "--num-workers", "0", "1")
    args.json = True
    rows = data.run(args)
    assert [r["num_workers"] for r in rows] == [0, 1]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["samples_per_s"]) == {"0", "1"}
    assert all(v > 0 for v in summary["samples_per_s"].values())
    steps = list(summary["cpu_ms_per_step"])
    assert steps == [
        "read row",
        "decode image",
        "decode label",
        "labels (map, check)",
        "RandomResize",
        "RandomCrop",
        "RandomFlip",
        "PhotoMetricDistortion",
        "PackSegInputs",
    ]
    assert summary["cpu_samples_per_s"] > 0 and summary["batch_size"] == 2
