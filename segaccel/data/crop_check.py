"""Build-time check that a `RandomCrop` can produce crops of its `crop_size`.

`RandomCrop` takes the whole side of an image smaller than the crop (as MMSegmentation does), and
training batches are padded to `data_preprocessor.size` when it is set. A `crop_size` larger than
every image that reaches the crop, with nothing padding up to it, therefore trains silently on
smaller images than the config says. `check_crop_size` runs the transforms before each crop on a
few samples spread over the dataset and raises a `ConfigError` naming the key when none fits.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from segaccel.data.rows import SampleError
from segaccel.data.transforms import Pad, RandomCrop
from segaccel.registry import ConfigError

DEFAULT_PROBES = 8


def check_crop_size(
    dataset: Any,
    key: str,
    pad_size: int | Sequence[int] | None = None,
    num_probes: int = DEFAULT_PROBES,
) -> None:
    """Raise a `ConfigError` if a `RandomCrop` of `dataset.pipeline` is larger than every probed image.

    Args:
        dataset: a `SegDataset` or `SegStreamDataset` (anything with a `pipeline` of transforms).
        key: where the dataset sits in the config (e.g. `train_dataloader.dataset`), for the message.
        pad_size: the model's `data_preprocessor.size` (h, w): batches are padded to it in training.
        num_probes: samples read, evenly spread over a map-style dataset (the first ones of a stream).

    A crop is fine when a `Pad` with a fixed `size` at least as large follows it, when `pad_size`
    covers it, or when at least one probed image is as large as the crop in both dimensions.
    Unreadable samples are left out of the probe (their errors come when they are read).
    """
    transforms = list(getattr(getattr(dataset, "pipeline", None), "transforms", []))
    crops = [(i, t) for i, t in enumerate(transforms) if isinstance(t, RandomCrop)]
    if not crops:
        return
    pad = _pair_or_none(pad_size)
    for i, crop in crops:
        ch, cw = crop.crop_size
        padded_after = any(isinstance(t, Pad) and _covers(t.size, (ch, cw)) for t in transforms[i + 1 :])
        if padded_after or _covers(pad, (ch, cw)):
            continue
        sizes = _sizes_before(dataset, transforms[:i], num_probes)
        if not sizes or any(h >= ch and w >= cw for h, w in sizes):
            continue
        shown = ", ".join(f"{h}x{w}" for h, w in sizes[:4]) + (", ..." if len(sizes) > 4 else "")
        raise ConfigError(
            f"{key}.pipeline.{i}.crop_size: RandomCrop's crop_size (h, w) = ({ch}, {cw}) is larger than "
            f"every image that reaches it ({len(sizes)} samples probed, (h x w) {shown}) and nothing pads "
            f"them up to it: training would see these smaller images instead of {ch}x{cw} crops. Pad the "
            f"batches (model.data_preprocessor.size: [{ch}, {cw}], as MMSegmentation's configs do, or a Pad "
            "with size after the crop), resize the images larger before the crop, or lower crop_size."
        )


def _sizes_before(dataset: Any, transforms: list, num_probes: int) -> list[tuple[int, int]]:
    """The (h, w) of up to `num_probes` samples after `transforms` (seeded as the dataset seeds epoch 0)."""
    seed = int(getattr(dataset, "seed", 0))
    sizes = []
    for index, results in _probe_results(dataset, num_probes):
        rng = np.random.default_rng([seed, 0, index])
        try:
            for t in transforms:
                results = t(results, rng=rng)
                if results is None:
                    break
        except SampleError:
            continue
        if results is not None:
            h, w = results["img"].shape[:2]
            sizes.append((int(h), int(w)))
    return sizes


def _probe_results(dataset: Any, num_probes: int):
    """`(index, results)` of up to `num_probes` readable samples, before any transform."""
    if hasattr(dataset, "load_results") and hasattr(dataset, "__len__"):
        n = len(dataset)
        for index in sorted({int(i) for i in np.linspace(0, n - 1, min(num_probes, n))} if n else ()):
            try:
                yield index, dataset.load_results(index)
            except SampleError:
                continue
    elif hasattr(dataset, "iter_results"):
        for position, results, error in itertools.islice(dataset.iter_results(), num_probes):
            if error is None and results is not None:
                yield position, results


def _covers(size: Sequence[int] | None, crop: tuple[int, int]) -> bool:
    return size is not None and size[0] >= crop[0] and size[1] >= crop[1]


def _pair_or_none(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])
