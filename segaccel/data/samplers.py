"""Samplers that shard data across processes themselves (batches are never dispatched from rank 0).

`InfiniteSampler` turns the dataset into one endless, seeded stream of `(epoch, index)` pairs —
a new permutation each epoch — and hands each process its own slots of every global batch. The
stream depends only on the seed, so the samples an optimizer step sees, and their augmentation
(seeded by `(seed, epoch, index)` in `SegDataset`), are the same for any number of processes or
workers, and a resumed run starts exactly where the stream stopped.

`ShardedEvalSampler` gives process `r` the indices `r, r + W, r + 2W, ...` with no padding, so
no sample is evaluated twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class InfiniteSampler(Sampler):
    """Endless `(epoch, index)` pairs for one process.

    Global position `p` of the stream is `epoch = p // n`, `index = perm_epoch[p % n]`. Global
    batches hold `batch_size * world_size` consecutive positions; process `rank` takes slots
    `[rank * batch_size, (rank + 1) * batch_size)` of each. `start_batch` global batches are
    skipped (resume).
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ) -> None:
        if dataset_size <= 0:
            raise ValueError("InfiniteSampler needs a non-empty dataset")
        self.n = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch

    def _permutation(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed + epoch * 1_000_003)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        global_batch = self.batch_size * self.world_size
        step = self.start_batch
        epoch, perm = -1, []
        while True:
            first = step * global_batch + self.rank * self.batch_size
            for p in range(first, first + self.batch_size):
                e = p // self.n
                if e != epoch:
                    epoch, perm = e, self._permutation(e)
                yield e, perm[p % self.n]
            step += 1


class ShardedEvalSampler(Sampler):
    """Indices `rank, rank + world_size, ...`: a disjoint, unpadded shard per process."""

    def __init__(self, dataset_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, dataset_size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
