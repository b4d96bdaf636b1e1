"""Samples the transform tests share (imported by name, like tests/engine/engine_helpers.py)."""

import numpy as np

from segaccel.data import init_results


def coordinate_sample(h: int = 30, w: int = 45, with_gt: bool = True) -> dict:
    """An image whose pixel (y, x) holds (y, x, 7) and a mask of 4 blocks with labels 0, 3, 7, 255."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([yy, xx, np.full_like(yy, 7)], axis=-1).astype(np.uint8)
    gt = np.zeros((h, w), np.uint8)
    gt[: h // 2, w // 2 :] = 3
    gt[h // 2 :, : w // 2] = 7
    gt[h // 2 :, w // 2 :] = 255
    return init_results(img, gt if with_gt else None, img_id="train/0")


def stripes() -> dict:
    """40x100: label 1 in columns [0, 50), label 0 in [50, 100)."""
    gt = np.zeros((40, 100), np.uint8)
    gt[:, :50] = 1
    return init_results(np.zeros((40, 100, 3), np.uint8), gt)


def balanced(gt: np.ndarray, ratio: float) -> bool:
    _, counts = np.unique(gt[gt != 255], return_counts=True)
    return len(counts) > 1 and counts.max() / counts.sum() < ratio


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
