"""Batch augmentations on the device: the draws the pipeline recorded give the CPU transform's pixels."""

import platform

import cv2
import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from segaccel.data import Compose, PhotoMetricDistortion, SegDataset, init_results, seg_collate
from segaccel.models.batch_augments import (
    apply_batch_augments,
    hsv_to_rgb,
    photometric_distortion,
    rgb_to_hsv,
)
from segaccel.models.data_preprocessor import SegDataPreProcessor
from segaccel.registry import ConfigError
from segaccel.structures import SegDataSample

X86 = platform.machine().lower() in ("x86_64", "amd64")


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[:3] = img[:3, :, :1]  # greys too (saturation 0)
    return img


def nchw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def hwc(batch: torch.Tensor) -> np.ndarray:
    return batch[0].permute(1, 2, 0).numpy()


def test_rgb_to_hsv_is_opencvs_integer_arithmetic():
    img = rgb(37, 53)
    assert np.array_equal(hwc(rgb_to_hsv(nchw(img))), cv2.cvtColor(img, cv2.COLOR_RGB2HSV))


@pytest.mark.parametrize("h, w", [(64, 128), (48, 53), (30, 457), (20, 31)])
def test_hsv_to_rgb_is_opencvs(h, w):
    hsv = cv2.cvtColor(rgb(h, w, seed=1), cv2.COLOR_RGB2HSV)
    ours, theirs = hwc(hsv_to_rgb(nchw(hsv))).astype(int), cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    diff = np.abs(ours - theirs)
    assert diff.max() <= 1
    if X86:  # OpenCV's vector loop (fused multiply-add, truncation) and its rounding row tail: exact
        assert diff.max() == 0


@pytest.mark.parametrize("h, w", [(32, 64), (24, 457)])  # 457: OpenCV's scalar tail in every row
def test_photometric_distortion_on_the_device_gives_the_cpu_pixels(h, w):
    cpu = PhotoMetricDistortion()
    images = [rgb(h, w, seed) for seed in range(24)]
    params = [cpu.draw(np.random.default_rng(seed)) for seed in range(24)]
    batch = torch.stack([torch.from_numpy(img).permute(2, 0, 1) for img in images])
    ours = photometric_distortion(batch, params)
    diff = max(
        int(np.abs(ours[n].permute(1, 2, 0).numpy().astype(int) - cpu.apply(images[n], params[n])).max())
        for n in range(24)
    )
    assert diff <= 1 and (diff == 0 or not X86)
    assert any(p["saturation"] is not None for p in params) and any(p["hue"] is not None for p in params)


def rows(n: int = 12) -> datasets.Dataset:
    g = np.random.default_rng(0)
    images = [Image.fromarray(g.integers(0, 256, (48, 80, 3), dtype=np.uint8)) for _ in range(n)]
    labels = [Image.fromarray(g.integers(0, 4, (48, 80), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def pipeline(on_device: bool) -> list[dict]:
    return [
        {"type": "RandomCrop", "crop_size": [32, 64]},
        {"type": "RandomFlip", "prob": 0.5, "direction": ["horizontal", "vertical"], "on_device": on_device},
        {"type": "PhotoMetricDistortion", "on_device": on_device},
        {"type": "PackSegInputs"},
    ]


def test_the_switch_gives_the_same_training_batches():
    data = rows()
    preprocessor = SegDataPreProcessor(mean=None, std=None)
    batches = {}
    for on_device in (False, True):
        ds = SegDataset(data, pipeline=pipeline(on_device), seed=3)
        samples = [ds[(1, i)] for i in range(len(data))]
        if on_device:  # the CPU only drew: images as cropped, the draws recorded
            assert all(s["data_samples"].metainfo.get("batch_augments") for s in samples)
        batch = seg_collate(samples)
        kept = [s.gt_sem_seg.data.clone() for s in batch["data_samples"]]
        out = preprocessor(batch, training=True)
        # the collated samples are not modified (the preprocessor flips copies)
        assert all(torch.equal(k, s.gt_sem_seg.data) for k, s in zip(kept, batch["data_samples"]))
        batches[on_device] = out
    cpu, device = batches[False], batches[True]
    assert torch.equal(cpu["inputs"], device["inputs"])  # widths of 64: OpenCV's vector loop throughout
    for a, b in zip(cpu["data_samples"], device["data_samples"]):
        assert torch.equal(a.gt_sem_seg.data, b.gt_sem_seg.data)
        assert (a.flip, a.flip_direction) == (b.flip, b.flip_direction)
    assert {s.flip_direction for s in device["data_samples"]} == {None, "horizontal", "vertical"}


def test_samples_of_different_sizes_are_distorted_apart():
    sample_params = [PhotoMetricDistortion().draw(np.random.default_rng(s)) for s in range(3)]
    sizes = [(16, 32), (20, 45), (16, 32)]
    images = [torch.from_numpy(rgb(h, w, s)).permute(2, 0, 1) for s, (h, w) in enumerate(sizes)]
    samples = [SegDataSample(metainfo={"batch_augments": [p]}) for p in sample_params]
    out, _ = apply_batch_augments(images, samples, torch.device("cpu"))
    for img, p, result in zip(images, sample_params, out):
        expected = PhotoMetricDistortion.apply(img.permute(1, 2, 0).numpy(), p)
        assert np.abs(result.permute(1, 2, 0).numpy().astype(int) - expected).max() <= (0 if X86 else 1)


def test_on_device_transforms_must_come_last():
    late_crop = [{"type": "PhotoMetricDistortion", "on_device": True}, {"type": "RandomCrop", "crop_size": 8}]
    with pytest.raises(ConfigError, match=r"pipeline.1: RandomCrop comes after PhotoMetricDistortion"):
        Compose(late_crop)
    Compose([{"type": "PhotoMetricDistortion", "on_device": True}, {"type": "PackSegInputs"}])
    r = Compose([{"type": "RandomFlip", "prob": 1.0, "on_device": True}])(
        init_results(rgb(8, 12), np.zeros((8, 12), np.uint8)), rng=np.random.default_rng(0)
    )
    assert r["flip"] is True and r["batch_augments"] == [{"type": "RandomFlip", "direction": "horizontal"}]
    assert np.array_equal(r["img"], rgb(8, 12))  # not flipped here
