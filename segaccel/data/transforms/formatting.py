"""`PackSegInputs`: the last transform, turning a results dict into model inputs and a data sample."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from segaccel.data.transforms.loading import BATCH_AUGMENTS_KEY
from segaccel.structures import PixelData, SegDataSample

DEFAULT_META_KEYS = (
    "img_id",
    "img_path",
    "ori_shape",
    "img_shape",
    "scale_factor",
    "flip",
    "flip_direction",
    "reduce_zero_label",
)


def to_chw(img: np.ndarray) -> np.ndarray:
    """(H, W, C) → a C-contiguous (C, H, W) copy: the pipeline's one transposing copy.

    `cv2.split` writes each channel plane straight into the result (about twice numpy's transposing
    copy); other layouts go through numpy.
    """
    h, w, c = img.shape
    out = np.empty((c, h, w), dtype=img.dtype)
    packed_pixels = img.strides[1] == c and img.strides[2] == 1 and img.strides[0] > 0
    if img.dtype == np.uint8 and 1 < c <= 4 and packed_pixels:
        cv2.split(img, list(out))
    else:
        np.copyto(out, img.transpose(2, 0, 1))
    return out


class PackSegInputs:
    """Pack `img` (H, W, 3) uint8 into a contiguous uint8 tensor (C, H, W) and the rest into a sample.

    Returns `{"inputs": Tensor (C, H, W) uint8, "data_samples": SegDataSample}`; the sample has
    `gt_sem_seg = PixelData(int64 (1, H, W))` when `gt_seg_map` is present, and the metainfo of
    each key in `meta_keys` that the results hold, plus `batch_augments` when a transform left
    its work to the model's data preprocessor (`on_device`).
    """

    def __init__(self, meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        self.meta_keys = tuple(meta_keys)

    def __call__(self, results: dict[str, Any], rng: np.random.Generator | None = None) -> dict[str, Any]:
        if "img" not in results:
            raise KeyError(f"PackSegInputs: results of sample {results.get('img_id')!r} have no 'img'")
        img = np.asarray(results["img"])
        if img.dtype != np.uint8:
            raise TypeError(
                f"PackSegInputs: sample {results.get('img_id')!r}: img must be uint8 (H, W, C), "
                f"got {img.dtype}"
            )
        if img.ndim == 2:
            img = img[..., None]
        inputs = torch.from_numpy(to_chw(img))
        metainfo = {k: results[k] for k in self.meta_keys if k in results}
        if BATCH_AUGMENTS_KEY in results:
            metainfo[BATCH_AUGMENTS_KEY] = results[BATCH_AUGMENTS_KEY]
        sample = SegDataSample(metainfo=metainfo)
        seg = results.get("gt_seg_map")
        if seg is not None:
            seg = np.asarray(seg)
            if seg.ndim == 2:
                seg = seg[None]
            sample.gt_sem_seg = PixelData(torch.from_numpy(np.ascontiguousarray(seg, dtype=np.int64)))
        return {"inputs": inputs, "data_samples": sample}

    def __repr__(self) -> str:
        return f"PackSegInputs(meta_keys={self.meta_keys})"
