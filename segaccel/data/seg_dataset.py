"""`SegDataset`: the map-style torch dataset over a `datasets.Dataset` of images and label maps."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import numpy as np
import torch

from segaccel.data.collate import SKIPPED_KEY, skip_marker
from segaccel.data.rows import SampleError, SampleReader
from segaccel.data.sources import undecoded_images
from segaccel.data.transforms import Compose


class SegDataset(SampleReader, torch.utils.data.Dataset):
    """A map-style torch dataset over a Hugging Face `datasets.Dataset` of images and label maps.

    `dataset[index]` or `dataset[(epoch, index)]` reads row `index` (image as RGB uint8, mask as
    stored), maps its labels, and runs the pipeline with
    `rng = np.random.default_rng([seed, epoch, index])` (epoch 0 for a plain index), so the
    augmentation of a sample depends only on (seed, epoch, index), never on workers or processes.
    Returns the pipeline's output (PackSegInputs' dict). With `label_column=None` the samples
    have no ground truth (inference). The mask is `gt_seg_map` from the start of the pipeline, or,
    if the pipeline holds `LoadAnnotations`, from that point on (so a test-time Resize before it
    leaves the labels at their original size).

    `skip_bad_samples`: a row raising `SampleError` is logged and skipped. With `fill_skipped`
    (training) the next good row, wrapping around, stands in and its dict carries the number of
    bad rows skipped for it under `SKIPPED_KEY`; without (evaluation, so no sample counts twice) the
    item is `skip_marker(1)`, which `seg_collate` drops and counts.
    """

    def __init__(
        self,
        hf_dataset: datasets.Dataset,
        pipeline: Sequence[dict | Callable] | Compose | None,
        image_column: str = "image",
        label_column: str | None = "label",
        reduce_zero_label: bool = False,
        label_map: dict[int, int] | None = None,
        ignore_index: int = 255,
        num_classes: int | None = None,
        seed: int = 0,
        name: str = "",
        split: str = "",
        id2label: dict[int, str] | None = None,
        skip_bad_samples: bool = False,
        fill_skipped: bool = True,
    ) -> None:
        self.name = name
        self.split = split
        self.skip_bad_samples = skip_bad_samples
        self.fill_skipped = fill_skipped
        self.num_skipped = 0
        if not hasattr(hf_dataset, "__getitem__") or not hasattr(hf_dataset, "__len__"):
            raise TypeError(
                f"{self._where()}: SegDataset needs a map-style datasets.Dataset (indexable, with a length), "
                f"got {type(hf_dataset).__name__}; a streamed dataset is read by SegStreamDataset"
            )
        self._init_reader(
            pipeline,
            image_column,
            label_column,
            reduce_zero_label,
            label_map,
            ignore_index,
            num_classes,
            seed,
            name,
            split,
            id2label,
        )
        self._check_columns(getattr(hf_dataset, "column_names", None))
        self.hf_dataset = hf_dataset
        needed = [c for c in (image_column, label_column) if c is not None]
        # Read only the columns we use, images undecoded: `segaccel.data.decode` decodes them.
        rows = hf_dataset.select_columns(needed) if isinstance(hf_dataset, datasets.Dataset) else hf_dataset
        self._rows = undecoded_images(rows, needed)

    def __len__(self) -> int:
        return len(self.hf_dataset)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = self._split_index(index)
        if not self.skip_bad_samples:
            return self._get(epoch, index)
        if not self.fill_skipped:  # evaluation: dropped (and counted) by seg_collate
            try:
                return self._get(epoch, index)
            except SampleError as exc:
                self._skip(exc)
                return skip_marker(1)
        # Training: the next good row (wrapping around) stands in, so batches keep their size.
        n = len(self)
        for offset in range(n):
            try:
                out = self._get(epoch, (index + offset) % n)
            except SampleError as exc:
                self._skip(exc)
                continue
            if offset:
                out[SKIPPED_KEY] = offset
            return out
        raise SampleError(f"{self._where()}: skip_bad_samples: all {n} samples are bad")

    def _get(self, epoch: int, index: int) -> dict[str, Any]:
        results = self.load_results(index)
        rng = np.random.default_rng([self.seed, epoch, index])
        out = self.pipeline(results, rng=rng)
        if out is None:
            raise SampleError(f"{self._where(index)}: the pipeline returned None")
        return out

    def read_row(self, index: int) -> dict[str, Any]:
        """Row `index` as stored: the image and label columns, images undecoded ({bytes, path} dicts)."""
        try:
            return self._rows[index]
        except Exception as exc:  # an unreadable Arrow file, a failing custom dataset, ...
            raise SampleError(
                f"{self._where(index)}: cannot read the row: {type(exc).__name__}: {exc}"
            ) from exc

    def load_results(self, index: int) -> dict[str, Any]:
        """Row `index` as the results dict a pipeline starts from (labels mapped and checked)."""
        img_id = f"{self.split}/{index}" if self.split else str(index)
        return self.row_results(self.read_row(index), index, img_id)

    def _split_index(self, index: int | tuple[int, int]) -> tuple[int, int]:
        if isinstance(index, tuple):
            if len(index) != 2:
                raise IndexError(f"{self._where()}: index must be an int or (epoch, index), got {index!r}")
            epoch, index = index
        else:
            epoch = 0
        epoch, index = operator.index(epoch), operator.index(index)
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"{self._where()}: index {index} out of range for {n} samples")
        if epoch < 0:
            raise IndexError(f"{self._where()}: epoch must be >= 0, got {epoch}")
        return epoch, index

    def __repr__(self) -> str:
        return f"SegDataset({self._where()}, {len(self)} samples, pipeline={self.pipeline!r})"
