"""Compose: pipelines built from config through the registry, the same augmentation in any process."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transform_samples import coordinate_sample, rng

from segaccel.data import Compose, SegDataset, seg_collate
from segaccel.registry import TRANSFORMS, ConfigError


def test_compose_builds_from_config_and_is_reproducible():
    pipeline = Compose(
        [
            {"type": "RandomResize", "scale": [90, 60], "ratio_range": [0.5, 2.0]},
            {"type": "RandomCrop", "crop_size": [24, 32], "cat_max_ratio": 0.75},
            {"type": "RandomFlip", "prob": 0.5},
            {"type": "PhotoMetricDistortion"},
        ]
    )
    assert [type(t).__name__ for t in pipeline.transforms] == [
        "RandomResize",
        "RandomCrop",
        "RandomFlip",
        "PhotoMetricDistortion",
    ]
    a = pipeline(coordinate_sample(), rng=np.random.default_rng([0, 0, 1]))
    b = pipeline(coordinate_sample(), rng=np.random.default_rng([0, 0, 1]))
    c = pipeline(coordinate_sample(), rng=np.random.default_rng([0, 0, 2]))
    assert a["img_shape"] == (24, 32)
    assert np.array_equal(a["img"], b["img"]) and np.array_equal(a["gt_seg_map"], b["gt_seg_map"])
    assert not np.array_equal(a["img"], c["img"])
    with pytest.raises(ConfigError, match="RandomCrp"):
        Compose([{"type": "RandomCrp", "crop_size": 4}])


def test_every_transform_is_registered():
    for name in ("Compose", "LoadAnnotations", "Resize", "RandomResize", "RandomCrop", "RandomFlip"):
        assert name in TRANSFORMS
    assert "PhotoMetricDistortion" in TRANSFORMS and "PackSegInputs" in TRANSFORMS


def test_new_transforms_are_registered_and_built_from_config():
    for name in (
        "RandomChoiceResize",
        "ResizeShortestEdge",
        "RandomRotate",
        "Pad",
        "RandomCutOut",
        "RGB2Gray",
    ):
        assert name in TRANSFORMS
    pipeline = Compose(
        [
            {"type": "ResizeShortestEdge", "scale": 40, "max_size": 100},
            {"type": "RandomRotate", "prob": 1.0, "degree": [90, 90], "auto_bound": True},
            {"type": "Pad", "size_divisor": 32},
            {"type": "PackSegInputs"},
        ]
    )
    out = pipeline(coordinate_sample(), rng=rng(0))
    meta = out["data_samples"].metainfo
    assert meta["ori_shape"] == (30, 45)  # the original size, for mapping predictions back
    assert meta["scale_factor"] == pytest.approx((60 / 45, 40 / 30))  # resize: 30x45 -> 40x60
    assert meta["img_shape"] == (64, 64) and out["inputs"].shape == (3, 64, 64)  # rotated 60x40, padded
    gt = out["data_samples"].gt_sem_seg.data[0]
    assert gt.shape == (64, 64) and (gt[60:] == 255).all() and (gt[:, 40:] == 255).all()


PIPELINE = [
    {"type": "RandomChoiceResize", "scales": [[64, 40], [80, 48]]},
    {"type": "RandomRotate", "prob": 0.7, "degree": 15},
    {"type": "RandomCrop", "crop_size": [24, 32], "cat_max_ratio": 0.75},
    {"type": "RandomFlip", "prob": 0.5},
    {"type": "RandomCutOut", "prob": 0.5, "n_holes": [1, 2], "cutout_shape": [4, 4], "seg_fill_in": 255},
    {"type": "PhotoMetricDistortion"},
    {"type": "Pad", "size": [32, 32]},
    {"type": "PackSegInputs"},
]


def rows(n: int = 4) -> datasets.Dataset:
    g = np.random.default_rng(0)
    images = [Image.fromarray(g.integers(0, 256, (30, 45, 3), dtype=np.uint8)) for _ in range(n)]
    labels = [Image.fromarray(g.integers(0, 4, (30, 45), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def digest(outputs: list[dict]) -> str:
    h = hashlib.sha256()
    for out in outputs:
        h.update(out["inputs"].numpy().tobytes())
        h.update(out["data_samples"].gt_sem_seg.data.numpy().tobytes())
    return h.hexdigest()


def test_same_augmentation_in_workers_and_in_another_process(tmp_path):
    data = rows()
    ds = SegDataset(data, pipeline=PIPELINE, seed=7)
    indices = [(2, i) for i in range(4)]
    main = [ds[i] for i in indices]
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, sampler=indices, num_workers=2, collate_fn=seg_collate
    )
    in_workers = [
        {"inputs": x, "data_samples": s} for b in loader for x, s in zip(b["inputs"], b["data_samples"])
    ]
    assert digest(in_workers) == digest(main)

    data.save_to_disk(str(tmp_path / "rows"))
    code = (
        "import datasets;"
        "from test_compose import PIPELINE, digest; from segaccel.data import SegDataset;"
        f"ds = SegDataset(datasets.load_from_disk({str(tmp_path / 'rows')!r}), pipeline=PIPELINE, seed=7);"
        "print(digest([ds[(2, i)] for i in range(4)]))"
    )
    here = str(Path(__file__).parent)  # test_compose imported by name, as pytest does
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert other.stdout.strip() == digest(main)
    assert digest([SegDataset(data, pipeline=PIPELINE, seed=8)[i] for i in indices]) != digest(main)
