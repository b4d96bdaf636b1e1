"""The results dict a pipeline starts from, and `LoadAnnotations`, where the label map enters it.

A transform is a callable `t(results, rng=None) -> results` on one sample held in a dict:
`img` (H, W, 3) uint8 RGB, optional `gt_seg_map` (H, W) integer labels, and metainfo
(`img_shape`, `ori_shape` (h, w); `scale_factor` (w_scale, h_scale); `flip`, `flip_direction`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

Results = dict[str, Any]

PENDING_GT_KEY = "pending_gt_seg_map"
# Augmentations drawn here but applied by the model's data preprocessor on the accelerator
# (`on_device: true`): a list of parameter dicts, each with its transform's `type`.
BATCH_AUGMENTS_KEY = "batch_augments"


def init_results(
    img: np.ndarray,
    gt_seg_map: np.ndarray | None = None,
    img_id: str | None = None,
    img_path: str | None = None,
    reduce_zero_label: bool = False,
    defer_gt: bool = False,
) -> Results:
    """The results dict a pipeline starts from: the image, its mask (if any) and initial metainfo.

    With `defer_gt` the mask is held back under `pending_gt_seg_map` until `LoadAnnotations`.
    """
    shape = (int(img.shape[0]), int(img.shape[1]))
    results: Results = {
        "img": img,
        "img_id": img_id,
        "img_path": img_path,
        "ori_shape": shape,
        "img_shape": shape,
        "scale_factor": (1.0, 1.0),
        "flip": False,
        "flip_direction": None,
        "reduce_zero_label": reduce_zero_label,
    }
    if gt_seg_map is not None:
        results[PENDING_GT_KEY if defer_gt else "gt_seg_map"] = gt_seg_map
    return results


class LoadAnnotations:
    """Where the label map enters the pipeline, as in MMSegmentation's test pipelines.

    SegDataset reads the mask before the pipeline. Without this transform the mask is
    `gt_seg_map` from the start, and every geometric transform applies to it (training). With
    it, the mask waits under `pending_gt_seg_map` and becomes `gt_seg_map` here, so transforms
    placed before it touch the image only: `[Resize, LoadAnnotations, PackSegInputs]` keeps
    validation labels at their original size, where metrics are computed.
    `reduce_zero_label` is a dataset option here (it is applied when the row is read); giving it
    to LoadAnnotations, as MMSegmentation configs do, is an error that says so.
    """

    def __init__(self, reduce_zero_label: bool | None = None) -> None:
        if reduce_zero_label is not None:
            raise ValueError(
                "LoadAnnotations(reduce_zero_label=...): in segaccel reduce_zero_label is an option of the "
                "dataset (dataset.reduce_zero_label: true), applied when a row is read; remove it here"
            )

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        if PENDING_GT_KEY in results:
            results["gt_seg_map"] = results.pop(PENDING_GT_KEY)
        return results

    def __repr__(self) -> str:
        return "LoadAnnotations()"
