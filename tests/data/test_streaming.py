"""Streamed datasets: one pass or endless epochs, sharded once across processes, resumed from a state."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from engine_helpers import free_port, reset_accelerate
from PIL import Image

from segaccel.data import SampleError, build_dataset
from segaccel.data.streaming import SegStreamDataset, StreamCheckpoint, StreamLoader, stream_collate
from segaccel.registry import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
PIPELINE = [
    {"type": "RandomFlip", "prob": 0.5},
    {"type": "PhotoMetricDistortion"},
    {"type": "PackSegInputs"},
]


@pytest.fixture(autouse=True)
def _no_shutdown_sleep(monkeypatch):
    """`datasets` sleeps 5 s whenever a shuffled multi-shard stream ends (a pyarrow workaround): not here."""
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0, raising=False)  # newer datasets


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_stream(root: Path, shards: int, per_shard: int, split: str = "train") -> str:
    """`shards` parquet files of `per_shard` rows; image k is filled with k (0, 1, 2, ...)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        ks = range(s * per_shard, (s + 1) * per_shard)
        label = np.zeros((4, 6), np.uint8)
        label[:, 3:] = 1
        rows = {
            "image": [{"bytes": png(np.full((4, 6, 3), k, np.uint8)), "path": f"{k}.png"} for k in ks],
            "label": [{"bytes": png(label), "path": None} for _ in ks],
        }
        data = datasets.Dataset.from_dict(rows, features=FEATURES)
        data.to_parquet(str(root / "data" / f"{split}-{s:05d}-of-{shards:05d}.parquet"))
    return str(root / "data" / f"{split}-*.parquet")


def stream_cfg(files: str, **options) -> dict:
    return {
        "path": "parquet",
        "data_files": {"train": files},
        "streaming": True,
        "validation_split": 0,
        "pipeline": PIPELINE,
        **options,
    }


def value(out: dict) -> int:
    """Which row a sample came from (its image's fill value; photometric changes keep pixels equal)."""
    img = out["inputs"]
    return int(img[0, 0, 0]) if img.shape[0] else -1


def raw_values(outputs) -> list[int]:
    return [int(Path(o["data_samples"].img_path).stem) for o in outputs]


def take(iterator, n: int) -> list:
    return [next(iterator) for _ in range(n)]


def test_evaluation_stream_is_one_pass_in_order(tmp_path):
    files = write_stream(tmp_path, shards=2, per_shard=3)
    ds = build_dataset(stream_cfg(files, pipeline=[{"type": "PackSegInputs"}]), "train", num_classes=2)
    assert isinstance(ds, SegStreamDataset) and not ds.infinite
    outputs = list(ds)
    assert raw_values(outputs) == [0, 1, 2, 3, 4, 5]
    assert "stream_state" not in outputs[0]
    assert outputs[4]["data_samples"].img_id == "train/0.0.0.4" and outputs[4]["inputs"].shape == (3, 4, 6)


def test_training_stream_repeats_reshuffled_and_seeded_by_position(tmp_path):
    files = write_stream(tmp_path, shards=2, per_shard=4)
    cfg = stream_cfg(files, shuffle_buffer_size=3)
    ds = build_dataset(cfg, "train", seed=5, num_classes=2, training=True)
    first = take(iter(ds), 16)
    epoch0, epoch1 = raw_values(first[:8]), raw_values(first[8:])
    assert sorted(epoch0) == sorted(epoch1) == list(range(8))  # every example once per epoch
    assert epoch0 != epoch1 and epoch0 != list(range(8))  # shuffled, differently each epoch
    assert [o["stream_state"]["epoch"] for o in first] == [0] * 8 + [1] * 8
    again = take(iter(build_dataset(cfg, "train", seed=5, num_classes=2, training=True)), 16)
    assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(first, again))  # reproducible
    other_seed = take(iter(build_dataset(cfg, "train", seed=6, num_classes=2, training=True)), 16)
    assert raw_values(other_seed) != raw_values(first)


def loader_values(ds, batches: int, workers: int, resume=None) -> tuple[list[int], dict]:
    checkpoint = StreamCheckpoint()
    if resume is not None:
        ds.resume_from(resume)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=stream_collate)
    out = []
    for i, batch in enumerate(StreamLoader(loader, checkpoint)):
        assert "stream_state" not in batch  # recorded, not passed on to the model
        out += [int(Path(s.img_path).stem) for s in batch["data_samples"]]
        if i + 1 == batches:
            break
    return out, checkpoint.state_dict()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_continues_where_it_stopped(tmp_path, workers):
    files = write_stream(tmp_path, shards=4, per_shard=3)
    make = lambda: build_dataset(stream_cfg(files, shuffle_buffer_size=0), "train", training=True)  # noqa: E731
    straight, _ = loader_values(make(), batches=12, workers=workers)  # two epochs of 12
    first, state = loader_values(make(), batches=4, workers=workers)
    assert first == straight[:8]
    assert state["world_size"] == 1 and set(state["processes"][0]["workers"]) == set(range(max(workers, 1)))
    rest, _ = loader_values(make(), batches=8, workers=workers, resume=state["processes"][0]["workers"])
    # the epoch is finished with exactly the samples not seen yet, then the next epoch starts
    assert sorted(first + rest[:4]) == list(range(12)) and sorted(rest[4:]) == sorted(straight[12:])
    if workers == 0:
        assert rest == straight[8:]  # one worker, no shuffle buffer: bit-exact


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_shuffled_stream_does_not_start_the_epoch_again(tmp_path, workers):
    files = write_stream(tmp_path, shards=2, per_shard=6)
    make = lambda: build_dataset(stream_cfg(files, shuffle_buffer_size=4), "train", training=True)  # noqa: E731
    first, state = loader_values(make(), batches=3, workers=workers)
    rest, _ = loader_values(make(), batches=3, workers=workers, resume=state["processes"][0]["workers"])
    fresh, _ = loader_values(make(), batches=3, workers=workers)
    assert rest != fresh and len(set(first) & set(rest)) <= 2  # the buffer is refilled: not bit-exact


WORKER = r"""
import faulthandler, json, os, sys
import datasets, torch, torch.distributed as dist
faulthandler.dump_traceback_later(90, exit=True)  # a hang ends with every thread's stack in the log
datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
from segaccel.data import build_dataset
from segaccel.data.streaming import StreamCheckpoint, StreamLoader, stream_collate
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
dist.init_process_group("gloo", rank=rank, world_size=world)
result = {{}}
for name, files in {files!r}.items():
    cfg = {{"path": "parquet", "data_files": {{"train": files}}, "streaming": True, "validation_split": 0,
           "pipeline": [{{"type": "PackSegInputs"}}], "shuffle_buffer_size": 4}}
    once = build_dataset(cfg, "train", rank=rank, world_size=world)
    result[name] = [int(os.path.basename(o["data_samples"].img_path)[:-4]) for o in once]
    train = build_dataset(cfg, "train", seed=3, rank=rank, world_size=world, training=True)
    checkpoint = StreamCheckpoint(rank, world)
    loader = torch.utils.data.DataLoader(train, batch_size=1, collate_fn=stream_collate)
    seen = []
    for batch in StreamLoader(loader, checkpoint):
        seen.append(int(os.path.basename(batch["data_samples"][0].img_path)[:-4]))
        if len(seen) == len(result[name]):
            break
    result[name + "_shuffled"] = seen
    state = checkpoint.state_dict()  # gathered from both processes
    result[name + "_state_ranks"] = [p["rank"] for p in state["processes"]]
    result[name + "_state_positions"] = [p["workers"][0]["position"] for p in state["processes"]]
with open(os.path.join({out!r}, f"rank{{rank}}.json"), "w") as f:
    json.dump(result, f)
dist.barrier()  # both processes have written their results
# Leave without destroy_process_group: on torch 2.6, gloo's teardown hangs in about one run of five
# (pytorch/pytorch#75097; 6 of 30 two-process runs here, 0 of 30 on torch 2.14). os._exit skips the
# interpreter's teardown too, where live gloo threads would abort the process.
sys.stderr.flush()
os._exit(0)
"""


def test_two_processes_get_disjoint_shards(tmp_path):
    files = {
        "shards": write_stream(tmp_path / "even", shards=4, per_shard=3),  # 4 shards / 2: whole shards
        "examples": write_stream(tmp_path / "odd", shards=3, per_shard=3),  # 3 shards: every 2nd example
    }
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT), files=files, out=str(tmp_path)))
    env = {
        **os.environ,
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    # stderr to files, not pipes: a process blocked on a full pipe would stall the other in a collective
    logs = [open(tmp_path / f"rank{r}.log", "w+") for r in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            env={**env, "RANK": str(r), "PYTHONPATH": str(ROOT)},  # segaccel from this checkout
            stderr=logs[r],
            text=True,
        )
        for r in range(2)
    ]
    for p, log in zip(procs, logs):
        p.wait(timeout=120)
        log.seek(0)
        err = log.read()
        log.close()
        assert p.returncode == 0, err[-2000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    for name, total in (("shards", 12), ("examples", 9)):
        assert not set(r0[name]) & set(r1[name]) and sorted(r0[name] + r1[name]) == list(range(total))
        a, b = r0[name + "_shuffled"], r1[name + "_shuffled"]
        assert not set(a) & set(b) and sorted(a + b) == list(range(total))  # shuffled, still disjoint
        assert r0[name + "_state_ranks"] == [0, 1]  # each process's stream position is in the checkpoint
        assert r0[name + "_state_positions"] == [len(a), len(b)]


def test_errors_in_a_stream_name_the_position(tmp_path):
    (tmp_path / "data").mkdir()
    rows = {
        "image": [
            {"bytes": png(np.zeros((4, 6, 3), np.uint8)), "path": None},
            {"bytes": b"junk", "path": None},
        ],
        "label": [{"bytes": png(np.zeros((4, 6), np.uint8)), "path": None}] * 2,
    }
    datasets.Dataset.from_dict(rows, features=FEATURES).to_parquet(str(tmp_path / "data" / "train.parquet"))
    ds = build_dataset(stream_cfg(str(tmp_path / "data" / "train.parquet")), "train", num_classes=2)
    with pytest.raises(
        SampleError,
        match=r"split 'train' index 1 \(stream position on process 0, worker 0, "
        r"epoch 0\): image in column 'image' cannot be decoded",
    ):
        list(ds)


def test_streamed_split_without_validation_needs_a_count(tmp_path):
    files = write_stream(tmp_path, shards=1, per_shard=10)
    cfg = {**stream_cfg(files), "validation_split": 3}
    val = list(build_dataset(cfg, "validation"))
    train = take(iter(build_dataset(cfg, "train", training=True)), 7)
    assert raw_values(val) == [0, 1, 2] and sorted(raw_values(train)) == list(range(3, 10))
    with pytest.raises(ConfigError, match="give validation_split as a number of examples"):
        build_dataset({**cfg, "validation_split": 0.1}, "validation")


# --- the training loop ---------------------------------------------------------------------------------

RUN_CONFIG = """
_base_: [{root}/configs/quickstart.yaml]
model:
  backbone: {{embed_dims: 8, num_layers: [1, 1, 1, 1], num_heads: [1, 2, 5, 8]}}
  decode_head: {{in_channels: [8, 16, 40, 64], channels: 16, num_classes: 2}}
train_dataloader:
  batch_size: 2
  num_workers: 0
  dataset:
    path: parquet
    data_files: {{train: {train}, validation: {val}}}
    streaming: true
    shuffle_buffer_size: 0
    id2label: [left, right]
    pipeline: [{{type: RandomFlip, prob: 0.5}}, {{type: PackSegInputs}}]
val_dataloader:
  batch_size: 2
  dataset:
    path: parquet
    data_files: {{train: {train}, validation: {val}}}
    streaming: true
    split: validation
    id2label: [left, right]
    pipeline: [{{type: PackSegInputs}}]
test_dataloader: null
train_cfg: {{type: IterBasedTrainLoop, max_iters: 4, val_interval: 100}}
param_scheduler: [{{type: PolyLR, power: 1.0, begin: 0, end: 4}}]
default_hooks:
  logger: {{interval: 1}}
  checkpoint: {{interval: 2, max_keep_ckpts: 3, save_best: null}}
"""


@pytest.fixture
def restore_segaccel_logger():
    """The runner's `setup_logging` reconfigures the `segaccel` logger (no propagation): undo it after."""
    import logging

    log = logging.getLogger("segaccel")
    saved = (log.level, log.propagate, list(log.handlers))
    yield
    for handler in list(log.handlers):
        if handler not in saved[2]:
            log.removeHandler(handler)
            handler.close()
    log.setLevel(saved[0])
    log.propagate = saved[1]
    for handler in saved[2]:
        if handler not in log.handlers:
            log.addHandler(handler)


def test_runner_trains_on_a_stream_and_resumes_it(
    tmp_path, monkeypatch, fresh_accelerate, restore_segaccel_logger
):
    from segaccel.config import load_config
    from segaccel.engine.runner import Runner

    train = write_stream(tmp_path / "train", shards=2, per_shard=5)
    val = write_stream(tmp_path / "val", shards=1, per_shard=3, split="validation")
    (tmp_path / "run.yaml").write_text(RUN_CONFIG.format(root=ROOT, train=train, val=val))
    seen: dict[str, list] = {}
    original = Runner._train_dataloader

    def recording(self, dataset, start_iter):
        loader = original(self, dataset, start_iter)
        assert isinstance(loader, StreamLoader)  # a plain DataLoader: never prepared (sharded) by Accelerate

        def batches():
            for batch in loader:
                seen.setdefault(str(self.work_dir), []).append([s.img_path for s in batch["data_samples"]])
                yield batch

        return batches()

    monkeypatch.setattr(Runner, "_train_dataloader", recording)

    def run(name: str, max_iters: int, resume: bool = False) -> dict:
        reset_accelerate()
        cfg = load_config(tmp_path / "run.yaml", [f"train_cfg.max_iters={max_iters}"])
        return Runner(cfg, work_dir=tmp_path / name, resume=resume).train()

    metrics = run("straight", 4)
    assert set(metrics) >= {"mIoU", "aAcc"}  # validation over the streamed split ran
    run("resumed", 2)
    run("resumed", 4, resume=True)
    straight, resumed = seen[str(tmp_path / "straight")], seen[str(tmp_path / "resumed")]
    assert len(straight) == len(resumed) == 4  # 2 iterations, then 2 more after resuming
    assert resumed == straight  # the stream continued where it stopped (no buffer, no workers: exact)
    assert sum(straight, []) == [f"{k}.png" for k in range(8)]  # not shuffled: shard by shard, in order


@pytest.mark.parametrize("shards", [3, 4])
def test_processes_times_workers_read_each_example_once_per_epoch(tmp_path, shards):
    files = write_stream(tmp_path, shards=shards, per_shard=3)
    seen = []
    for rank in range(2):  # what process `rank` of 2 reads with two DataLoader workers
        ds = build_dataset(
            stream_cfg(files, shuffle_buffer_size=4), "train", rank=rank, world_size=2, training=True
        )
        loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, collate_fn=stream_collate)
        epoch0 = []
        for i, batch in enumerate(loader):
            if batch["stream_state"]["epoch"] == 0:
                epoch0.append(int(Path(batch["data_samples"][0].img_path).stem))
            if i == 4 * shards * 3:
                break
        seen.append(epoch0)
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(shards * 3))
