"""`inference_model`: segment images with a Segmentor exactly as the test loop does.

image(s) → results dict → `Compose(model.test_pipeline)` (+ PackSegInputs) → collate →
`model.data_preprocessor(batch, training=False)` → `model.predict` → SegDataSamples whose
`pred_sem_seg` / `seg_logits` are at each image's original size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from segaccel.data.collate import seg_collate
from segaccel.data.decode import DecodeError, check_size, decode_image
from segaccel.data.transforms import Compose, PackSegInputs, init_results
from segaccel.structures import SegDataSample

ImageInput = Image.Image | np.ndarray | str | os.PathLike


def inference_model(
    model: torch.nn.Module, images: ImageInput | Sequence[ImageInput], batch_size: int = 8
) -> SegDataSample | list[SegDataSample]:
    """Segment one image or a list of images.

    Images are PIL images, numpy arrays ((H, W, 3) RGB uint8 or (H, W) grayscale uint8) or file
    paths. One image gives one SegDataSample, a list gives a list (in order). Samples come back on
    the CPU with `pred_sem_seg` (int64 (1, H, W)) and `seg_logits` at the image's original size.

    Consecutive images of the same size after the test pipeline are batched together (up to
    `batch_size`); images of different sizes are never padded into one batch, so an image's
    prediction does not depend on its neighbours. Whole or slide inference follows the model's
    `test_cfg`. The model runs in eval mode under no_grad (its previous train/eval mode is
    restored afterwards), in the dtype of its parameters (`seg_logits` come back in that dtype).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    single = not isinstance(images, (list, tuple))
    items = [images] if single else list(images)
    pipeline = _test_pipeline(getattr(model, "test_pipeline", None))

    was_training = model.training
    model.eval()
    results: list[SegDataSample] = []
    try:
        batch: list[dict[str, Any]] = []
        for index, image in enumerate(items):
            packed = pipeline(_results_dict(image, index))
            if packed is None:
                raise ValueError(f"images[{index}]: the test pipeline dropped the image (gave None)")
            if batch and (len(batch) == batch_size or batch[0]["inputs"].shape != packed["inputs"].shape):
                results.extend(_predict(model, batch))
                batch = []
            batch.append(packed)
        if batch:
            results.extend(_predict(model, batch))
    finally:
        model.train(was_training)
    return results[0] if single else results


def _predict(model: torch.nn.Module, batch: list[dict[str, Any]]) -> list[SegDataSample]:
    with torch.no_grad():
        data = model.data_preprocessor(seg_collate(batch), training=False)
        inputs = data["inputs"]
        dtype = _floating_dtype(model)
        if dtype is not None and inputs.dtype != dtype:  # a model loaded with dtype=torch.bfloat16, ...
            inputs = inputs.to(dtype)
        samples = model.predict(inputs, data["data_samples"])
    return [sample.cpu() for sample in samples]


def _floating_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The dtype of the model's floating-point parameters (None when it has none)."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return None


def _test_pipeline(steps: Sequence[dict | Any] | None) -> Compose:
    """`Compose(steps)` with PackSegInputs appended when the steps do not end with it."""
    steps = list(steps or [])
    last = steps[-1] if steps else None
    last_type = last.get("type") if isinstance(last, dict) else type(last).__name__
    if last_type != "PackSegInputs":
        steps.append(PackSegInputs())
    return Compose(steps, key="model.test_pipeline")


def _results_dict(image: ImageInput, index: int) -> dict[str, Any]:
    """The pipeline's starting dict for one image: RGB uint8 (H, W, 3), shapes, id and path.

    Files and PIL images are decoded as the datasets decode them (`segaccel.data.decode`: upright
    by their EXIF orientation tag), so an image segments the same here as in `scripts/test.py`.
    """
    img_path = None
    if isinstance(image, (str, os.PathLike)):
        img_path = str(image)
        if not os.path.isfile(img_path):
            raise FileNotFoundError(f"images[{index}]: no image file at {img_path!r}")
        array = _decode(image, f"images[{index}] ({img_path})")
        img_id = Path(img_path).stem
    elif isinstance(image, Image.Image):
        array = _decode(image, f"images[{index}]")
        img_id = str(index)
    elif isinstance(image, np.ndarray):
        array = _rgb_array(image, index)
        img_id = str(index)
    else:
        raise TypeError(
            f"images[{index}]: expected a PIL image, a numpy array or a file path, got {type(image).__name__}"
        )
    return init_results(np.ascontiguousarray(array), img_id=img_id, img_path=img_path)


def _decode(image: Image.Image | str | os.PathLike, where: str) -> np.ndarray:
    try:
        return decode_image(image).pixels
    except DecodeError as exc:
        raise ValueError(f"{where}: the image {exc}") from exc


def _rgb_array(array: np.ndarray, index: int) -> np.ndarray:
    if array.ndim >= 2:
        try:
            check_size(array.shape[0], array.shape[1])
        except DecodeError as exc:
            raise ValueError(f"images[{index}]: the image {exc}") from exc
    if array.dtype != np.uint8:
        raise TypeError(f"images[{index}]: a numpy image must be uint8 (0-255), got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 3:
        return array
    raise ValueError(f"images[{index}]: expected an (H, W, 3) RGB or (H, W) grayscale array: {array.shape}")
