"""DataLoader settings from the data side: `num_workers: auto` and the worker set-up."""

import cv2
import pytest
import torch

from segaccel.data import loader
from segaccel.data.loader import resolve_num_workers, worker_init_fn
from segaccel.registry import ConfigError


@pytest.mark.parametrize(
    "cpus, local_processes, expected",
    [(16, 1, 15), (16, 8, 1), (64, 2, 16), (2, 1, 1), (1, 1, 0), (8, 8, 0)],
)
def test_auto_shares_the_cpus_among_the_local_processes(monkeypatch, cpus, local_processes, expected):
    monkeypatch.setattr(loader, "available_cpus", lambda: cpus)
    assert resolve_num_workers("auto", local_processes=local_processes) == expected
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_processes))  # what accelerate launch / torchrun set
    assert resolve_num_workers("auto") == expected


def test_counts_pass_and_anything_else_is_a_config_error():
    assert resolve_num_workers(0) == 0 and resolve_num_workers(6) == 6
    for bad in (-1, 2.5, "four", True, None):
        with pytest.raises(ConfigError, match=r"train_dataloader.num_workers: expected a DataLoader worker"):
            resolve_num_workers(bad, key="train_dataloader.num_workers")


def test_worker_init_turns_opencv_threads_off_and_torch_to_one():
    threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        torch.set_num_threads(2)
        cv2.setNumThreads(2)
        worker_init_fn(0)
        assert torch.get_num_threads() == 1
        assert cv2.getNumThreads() in (0, 1)  # 0 asks OpenCV to run sequentially; some builds report 1
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
