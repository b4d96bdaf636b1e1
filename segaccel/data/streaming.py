"""Streamed datasets: `datasets.IterableDataset` splits read without downloading them first.

The stream is sharded across processes once, here, with `split_dataset_by_node` (the runner
never lets Accelerate shard it again), shuffled with a buffer of examples (training), and split
across DataLoader workers by shards (`IterableDataset.shard`), so that each worker's position
can be saved and restored with `state_dict`/`load_state_dict`. Each sample is augmented with a
generator seeded by its place in the stream, `(seed, epoch, process, worker, position)`.

Resuming: every training sample carries the stream's `state_dict()` after it; `StreamLoader`
records the latest one of each worker as batches are consumed, and `StreamCheckpoint` (registered
with Accelerate's checkpointing) saves them for all processes and gives each its own back. A
resumed stream continues from there — the same samples, though not necessarily bit-exact: the
shuffle buffer is refilled, and workers take turns from the first one again.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node

from segaccel.data.collate import SKIPPED_KEY, seg_collate, skip_marker
from segaccel.data.rows import SampleError, SampleReader
from segaccel.data.sources import undecoded_images
from segaccel.data.transforms import Compose

logger = logging.getLogger(__name__)

STATE_KEY = "stream_state"


def prepare_stream(
    hf_dataset: datasets.IterableDataset,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    shuffle_buffer_size: int = 0,
    columns: Sequence[str] | None = None,
) -> datasets.IterableDataset:
    """Keep `columns`, leave images undecoded, shuffle (buffer > 0), then shard for `rank` of `world_size`.

    Shuffling comes first with a fixed seed, so every process shuffles the shards the same way
    and `split_dataset_by_node` hands out disjoint parts: whole shards when their number divides
    by `world_size`, else every `world_size`-th example.
    """
    stream = hf_dataset
    if columns and stream.column_names:
        stream = stream.select_columns([c for c in columns if c in stream.column_names])
    stream = undecoded_images(stream, columns or [])  # decoded by segaccel.data.decode
    if shuffle_buffer_size > 0:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
    if world_size > 1:
        stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
    return stream


class SegStreamDataset(SampleReader, torch.utils.data.IterableDataset):
    """A torch iterable dataset over a streamed split: rows → pipeline → PackSegInputs' dicts.

    `hf_dataset` is already sharded for this process (`prepare_stream`). With `infinite` (training)
    the stream repeats, epoch after epoch (`set_epoch` reshuffles), and every output carries its
    `stream_state` for checkpoints; otherwise it is read once (evaluation). A sample's augmentation
    is seeded by `(seed, epoch, rank, worker, position)`; its `img_id` is
    `"<split>/<rank>.<worker>.<epoch>.<position>"` and errors name that position.

    `skip_bad_samples`: a bad row is logged and skipped; the number of rows skipped since the last
    sample rides on the next sample (`SKIPPED_KEY`), so the loops can total it. A one-pass stream
    (evaluation) that ends right after bad rows yields a `skip_marker` for them, which `seg_collate`
    drops and counts; a repeating stream (training) carries them on into its next epoch.
    """

    def __init__(
        self,
        hf_dataset: datasets.IterableDataset,
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
        rank: int = 0,
        world_size: int = 1,
        infinite: bool = False,
        skip_bad_samples: bool = False,
    ) -> None:
        self.skip_bad_samples = skip_bad_samples
        self.num_skipped = 0
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
        if not isinstance(hf_dataset, datasets.IterableDataset):
            raise TypeError(f"{self._where()}: SegStreamDataset needs a datasets.IterableDataset")
        self._check_columns(hf_dataset.column_names)
        # Image columns are decoded here (segaccel.data.decode), not by `datasets` while iterating: the
        # same pixels as the map-style path, and a corrupt file gives an error naming the sample (or is
        # skipped) instead of ending the stream.
        self.hf_dataset = undecoded_images(hf_dataset, [image_column, label_column])
        self.rank = rank
        self.world_size = world_size
        self.infinite = infinite
        self._start_states: dict[int, dict] = {}

    def resume_from(self, worker_states: dict[int, dict] | None) -> None:
        """Start each DataLoader worker where its recorded `stream_state` says (see `StreamCheckpoint`)."""
        self._start_states = {int(k): v for k, v in (worker_states or {}).items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        start = self._start_states.get(worker)
        if start is not None and start.get("num_workers") != num_workers:
            logger.warning(
                f"{self._where()}: the stream position was saved with {start.get('num_workers')} DataLoader "
                f"workers, now there are {num_workers}; worker {worker} restarts epoch {start['epoch']} from "
                "its beginning"
            )
            start = {"epoch": start["epoch"], "position": 0, "hf": None}
        epoch = int(start["epoch"]) if start else 0
        position = int(start["position"]) if start else 0
        stream = self._worker_stream(worker, num_workers)
        if stream is None:
            return
        pending = 0  # bad rows skipped since the last sample handed out
        while True:
            stream.set_epoch(epoch)
            resumed = start is not None and start.get("hf") is not None
            stream.load_state_dict(start["hf"] if resumed else None)
            start = None
            produced = False
            # `iter` rather than `for row in stream`: the worker split is ours (above), so the state
            # of each worker's stream has the structure it is restored into.
            for batch in stream.iter(batch_size=1):
                row = {key: values[0] for key, values in batch.items()}
                try:
                    out = self._sample(row, epoch, worker, position)
                except SampleError as exc:
                    if not self.skip_bad_samples:
                        raise
                    self._skip(exc)
                    pending += 1
                    position += 1
                    continue
                position += 1
                produced = True
                if pending:
                    out[SKIPPED_KEY], pending = pending, 0
                if self.infinite:
                    out[STATE_KEY] = {
                        "worker": worker,
                        "num_workers": num_workers,
                        "epoch": epoch,
                        "position": position,
                        "hf": stream.state_dict(),
                    }
                yield out
            if not self.infinite:
                if pending:
                    yield skip_marker(pending)
                return
            if not produced and not resumed:
                what = f"has only bad rows ({pending} skipped)" if pending else "is empty"
                if num_workers > 1:  # the other workers go on
                    logger.warning(
                        f"{self._where()}: the stream of worker {worker} of process {self.rank} {what}"
                    )
                    return
                raise SampleError(f"{self._where()}: the stream of process {self.rank} {what}")
            epoch, position = epoch + 1, 0

    def _worker_stream(self, worker: int, num_workers: int) -> datasets.IterableDataset | None:
        """This DataLoader worker's part of the stream: every `num_workers`-th shard (None: no shard)."""
        if num_workers <= 1:
            return copy.deepcopy(self.hf_dataset)  # set_epoch / load_state_dict must not touch ours
        shards = min(num_workers, self.hf_dataset.num_shards)
        if worker >= shards:
            if worker == shards:
                logger.warning(
                    f"{self._where()}: {num_workers} DataLoader workers but only {shards} shard(s) in the "
                    f"stream of process {self.rank}: workers {shards}..{num_workers - 1} get no data"
                )
            return None
        return self.hf_dataset.shard(num_shards=shards, index=worker, contiguous=False)

    def iter_results(self) -> Iterator[tuple[int, dict[str, Any] | None, Exception | None]]:
        """One pass over this process's stream without the pipeline: `(position, results, error)`.

        A row that cannot be used gives its `SampleError` instead of stopping the pass (for
        `scan_dataset`).
        """
        stream = copy.deepcopy(self.hf_dataset)
        for position, batch in enumerate(stream.iter(batch_size=1)):
            row = {key: values[0] for key, values in batch.items()}
            where = f"{position} (stream position on process {self.rank})"
            try:
                yield position, self.row_results(row, where, f"{self.split}/{self.rank}.0.0.{position}"), None
            except SampleError as exc:
                yield position, None, exc

    def _sample(self, row: dict[str, Any], epoch: int, worker: int, position: int) -> dict[str, Any]:
        where = f"{position} (stream position on process {self.rank}, worker {worker}, epoch {epoch})"
        img_id = f"{self.split}/{self.rank}.{worker}.{epoch}.{position}"
        results = self.row_results(row, where, img_id)
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker, position])
        out = self.pipeline(results, rng=rng)
        if out is None:
            raise SampleError(f"{self._where(where)}: the pipeline returned None")
        return out

    def __repr__(self) -> str:
        kind = "repeating" if self.infinite else "one pass"
        return (
            f"SegStreamDataset({self._where()}, streamed, {kind}, process {self.rank} of {self.world_size}, "
            f"pipeline={self.pipeline!r})"
        )


def stream_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """`seg_collate` plus the `stream_state` after the last sample (a batch comes from one worker)."""
    out: dict[str, Any] = seg_collate(batch)
    states = [item[STATE_KEY] for item in batch if isinstance(item, dict) and STATE_KEY in item]
    if states:
        out[STATE_KEY] = states[-1]
    return out


class StreamCheckpoint:
    """Where each DataLoader worker of each process is in its training stream; saved with the training state.

    `record(state)` keeps the latest consumed state per worker. `state_dict()` gathers every
    process's states (it is called on all processes by `accelerator.save_state`; only the main
    process writes), and `load_state_dict` gives this process its own back as `loaded`.
    """

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        self.rank = rank
        self.world_size = world_size
        self.worker_states: dict[int, dict] = {}
        self.loaded: dict[int, dict] | None = None

    def record(self, state: dict[str, Any]) -> None:
        self.worker_states[int(state["worker"])] = state

    def state_dict(self) -> dict[str, Any]:
        local = {"rank": self.rank, "workers": copy.deepcopy(self.worker_states)}
        dist = torch.distributed
        if self.world_size > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, local)
        else:
            gathered = [local]
        return {"world_size": self.world_size, "processes": sorted(gathered, key=lambda p: p["rank"])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("world_size") != self.world_size:
            logger.warning(
                f"the stream position was saved by {state.get('world_size')} processes, now there are "
                f"{self.world_size}: the training stream starts from its beginning"
            )
            self.loaded = None
            return
        self.loaded = dict(state["processes"][self.rank]["workers"])
        self.worker_states = copy.deepcopy(self.loaded)


class StreamLoader:
    """Iterates a DataLoader over a training stream, recording each batch's stream state as it goes out."""

    def __init__(self, loader: torch.utils.data.DataLoader, checkpoint: StreamCheckpoint) -> None:
        self.loader = loader
        self.checkpoint = checkpoint

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            state = batch.pop(STATE_KEY, None)
            if state is not None:
                self.checkpoint.record(state)
            yield batch
