"""The one DataLoader factory: batch sizes, worker settings for training vs evaluation, eval shards."""

from types import SimpleNamespace

import torch

from segaccel.data import seg_collate
from segaccel.engine.dataloaders import build_dataloader, eval_dataloader

CPU = torch.device("cpu")


def test_training_loaders_keep_their_workers_and_take_prefetch_factor():
    cfg = {"num_workers": 2, "prefetch_factor": 3}
    train = build_dataloader(list(range(10)), cfg, training=True, device=CPU)
    settings = (train.batch_size, train.num_workers, train.persistent_workers, train.prefetch_factor)
    assert settings == (2, 2, True, 3)
    assert train.collate_fn is seg_collate and not train.pin_memory
    evaluation = build_dataloader(list(range(10)), cfg, training=False, device=CPU)
    settings = (evaluation.batch_size, evaluation.persistent_workers, evaluation.prefetch_factor)
    assert settings == (1, False, 2)  # torch's default prefetch
    cfg = {"batch_size": 4, "prefetch_factor": 3}
    no_workers = build_dataloader(list(range(10)), cfg, training=True, device=CPU)
    settings = (no_workers.batch_size, no_workers.persistent_workers, no_workers.prefetch_factor)
    assert settings == (4, False, None)


def test_memory_is_pinned_for_cuda_devices_only():
    # Building a loader does not touch the device, so the CUDA case is checked without a GPU.
    for device, pinned in ((torch.device("cuda", 0), True), (CPU, False), (torch.device("meta"), False)):
        for training in (True, False):
            loader = build_dataloader(list(range(4)), {}, training=training, device=device)
            assert loader.pin_memory is pinned, (device, training)


def test_eval_loaders_give_each_process_its_own_samples_once():
    dataset = list(range(7))
    shards = []
    for rank in (0, 1):
        accelerator = SimpleNamespace(process_index=rank, num_processes=2, device=CPU)
        shards.append(list(eval_dataloader(dataset, {"batch_size": 2}, accelerator).sampler))
    assert sorted(shards[0] + shards[1]) == dataset  # every sample once, no padding duplicates
    assert len(shards[0]) == 4 and len(shards[1]) == 3
