"""Validation overlays during training: a few fixed samples as image | ground truth | prediction.

Written to `WORK_DIR/vis/iter_<N>/<index>.png` by the main process and sent to the trackers that
take images (tensorboard, wandb).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segaccel.engine.logging import logger
from segaccel.visualization import make_comparison


def write_val_overlays(
    samples: list[Any], dataset: Any, model: Any, out_dir: Path, num_processes: int = 1
) -> list[Path]:
    """PNGs of the main process's first predicted validation `samples` (`SegDataSample`s).

    Sample `j` of the main process is dataset index `j x num_processes` (the sharded evaluation
    order); its original image is read from `dataset` (`load_results`). A dataset without random
    access (a streamed split) gives none. Returns the files written.
    """
    if dataset is None or not hasattr(dataset, "load_results"):
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [model.id2label[i] for i in sorted(model.id2label)] if model.id2label else None
    written = []
    for j, sample in enumerate(samples):
        index = j * num_processes
        image = dataset.load_results(index)["img"]
        gt = sample.gt_sem_seg.data[0].numpy() if "gt_sem_seg" in sample else None
        pred = sample.pred_sem_seg.data[0].numpy()
        path = out_dir / f"{index:05d}.png"
        make_comparison(image, gt, pred, model.palette, class_names=names, min_height=192).save(path)
        written.append(path)
    return written


def log_overlays_to_trackers(accelerator: Any, folder: Path, iteration: int) -> None:
    """Send the overlay PNGs in `folder` to the trackers that take images (main process only)."""
    if not accelerator.is_main_process or not accelerator.trackers:
        return
    from PIL import Image

    files = sorted(Path(folder).glob("*.png"))
    images = {f"val/overlay_{f.stem}": np.asarray(Image.open(f).convert("RGB")) for f in files}
    if not images:
        return
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            batched = {k: v[None] for k, v in images.items()}  # (1, H, W, 3)
            tracker.log_images(batched, step=iteration, dataformats="NHWC")
        elif hasattr(tracker, "log_images"):
            try:
                tracker.log_images({k: [v] for k, v in images.items()}, step=iteration)
            except Exception as err:  # a tracker's image API differs: never stop training for it
                logger.warning(f"could not send overlays to the {tracker.name} tracker: {err}")
