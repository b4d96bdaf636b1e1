"""`skip_bad_samples`: exact totals of skipped bad rows across DataLoader workers and processes, and
evaluation that drops bad samples instead of evaluating a stand-in twice.

Training: the next good row stands in and carries the count (`num_skipped`), `seg_collate` sums it,
the loop logs `bad_samples_skipped` per interval (all processes) and the run's total. Evaluation: a bad
row becomes a marker that `seg_collate` drops; the metrics cover the good rows only, and TestLoop's
writers get the dataset indices of the samples they really receive.
"""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from engine_helpers import ROOT, TINY_CONFIG, TRAIN_SCRIPT, read_scalars, two_process_launch
from PIL import Image

from segaccel import Segmentor
from segaccel.config import load_config
from segaccel.data import SegDataset
from segaccel.data.collate import DROPPED_KEY, SKIPPED_KEY, is_skip_marker, seg_collate, skip_marker
from segaccel.data.samplers import InfiniteSampler, ShardedEvalSampler
from segaccel.data.streaming import STATE_KEY, SegStreamDataset, stream_collate
from segaccel.engine import loops
from segaccel.engine.runner import Runner
from segaccel.engine.test_outputs import OverlayWriter, PredictionWriter
from segaccel.structures import SegDataSample

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})


def png(array: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def truncated(entry: dict) -> dict:
    return {"bytes": entry["bytes"][: len(entry["bytes"]) // 2], "path": None}


def rows(n: int, bad: set[int], seed: int, h: int = 32, w: int = 48) -> datasets.Dataset:
    """`n` random images with 4-class masks; rows in `bad` alternate a truncated image, a label 9."""
    rng = np.random.default_rng(seed)
    images = [png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for _ in range(n)]
    masks = [png(rng.integers(0, 4, (h, w), dtype=np.uint8)) for _ in range(n)]
    for k, i in enumerate(sorted(bad)):
        if k % 2 == 0:
            images[i] = truncated(images[i])
        else:
            masks[i] = png(np.full((h, w), 9, np.uint8))
    return datasets.Dataset.from_dict({"image": images, "label": masks}, features=FEATURES)


def item(tag: int, skipped: int = 0) -> dict:
    out = {"inputs": torch.full((3, 2, 2), tag, dtype=torch.uint8), "data_samples": SegDataSample()}
    if skipped:
        out[SKIPPED_KEY] = skipped
    return out


# --- collate and datasets, by hand ---------------------------------------------------------------------


def test_collate_sums_stand_in_counts_and_drops_markers():
    batch = seg_collate([item(0), skip_marker(1), item(2, skipped=3), skip_marker(2), item(4)])
    assert [int(t[0, 0, 0]) for t in batch["inputs"]] == [0, 2, 4]
    assert len(batch["data_samples"]) == 3
    assert batch[SKIPPED_KEY] == 1 + 3 + 2 and batch[DROPPED_KEY] == [1, 3]
    # nothing to report: neither key
    assert sorted(seg_collate([item(0), item(1)])) == ["data_samples", "inputs"]
    # stand-ins only (training): the count, no drops; every item dropped: empty lists
    assert seg_collate([item(0, skipped=2), item(1)])[SKIPPED_KEY] == 2
    assert DROPPED_KEY not in seg_collate([item(0, skipped=2)])
    empty = seg_collate([skip_marker(1), skip_marker(1)])
    assert empty == {"inputs": [], "data_samples": [], SKIPPED_KEY: 2, DROPPED_KEY: [0, 1]}
    assert is_skip_marker(skip_marker()) and not is_skip_marker(item(0, skipped=1))


def test_map_dataset_stand_ins_count_their_skips_and_evaluation_drops():
    hf = rows(6, bad={1, 3, 4}, seed=0, h=4, w=6)
    train = SegDataset(hf, pipeline=None, split="train", num_classes=4, skip_bad_samples=True)
    got = [(train[i]["data_samples"].img_id, train[i].get(SKIPPED_KEY, 0)) for i in range(6)]
    assert got == [
        ("train/0", 0),
        ("train/2", 1),
        ("train/2", 0),
        ("train/5", 2),
        ("train/5", 1),
        ("train/5", 0),
    ]
    evaluation = SegDataset(
        hf, pipeline=None, split="val", num_classes=4, skip_bad_samples=True, fill_skipped=False
    )
    items = [evaluation[i] for i in range(6)]
    assert [is_skip_marker(x) for x in items] == [False, True, False, True, True, False]
    assert [x["data_samples"].img_id for x in items if not is_skip_marker(x)] == ["val/0", "val/2", "val/5"]
    assert SKIPPED_KEY not in items[2]  # a good row in evaluation carries nothing


def test_stream_counts_reach_the_batches_in_training_and_evaluation():
    hf = rows(6, bad={1, 4, 5}, seed=0, h=4, w=6)  # ends with two bad rows
    once = SegStreamDataset(
        hf.to_iterable_dataset(), pipeline=None, split="val", num_classes=4, skip_bad_samples=True
    )
    items = list(once)
    assert [x.get(SKIPPED_KEY, 0) for x in items] == [0, 1, 0, 2]  # rows 0, 2 (after 1), 3, marker
    assert is_skip_marker(items[-1])  # the stream ended right after bad rows: their count is not lost
    batch = seg_collate(items)
    assert len(batch["inputs"]) == 3 and batch[SKIPPED_KEY] == 3 and batch[DROPPED_KEY] == [3]

    repeating = SegStreamDataset(
        hf.to_iterable_dataset(),
        pipeline=None,
        split="train",
        num_classes=4,
        skip_bad_samples=True,
        infinite=True,
    )
    stream = iter(repeating)
    first = [next(stream) for _ in range(5)]  # epoch 0: rows 0, 2, 3; epoch 1: rows 0, 2
    assert not any(is_skip_marker(x) for x in first)
    assert [x.get(SKIPPED_KEY, 0) for x in first] == [0, 1, 0, 2, 1]  # 4, 5 carried into epoch 1
    assert [(x[STATE_KEY]["epoch"], x[STATE_KEY]["position"]) for x in first] == [
        (0, 1),
        (0, 3),
        (0, 4),
        (1, 1),
        (1, 3),
    ]
    collated = stream_collate(first[2:4])
    assert collated[SKIPPED_KEY] == 2 and collated[STATE_KEY]["position"] == 1


def test_test_loop_writers_get_the_indices_of_the_samples_they_receive(tmp_path):
    """A shard with a partly dropped and an all-dropped batch: indices follow the samples they name."""
    hf = rows(14, bad={3, 7, 9, 11}, seed=1, h=4, w=6)
    ds = SegDataset(hf, pipeline=None, split="val", num_classes=4, skip_bad_samples=True, fill_skipped=False)
    sampler = ShardedEvalSampler(len(ds), rank=1, world_size=2)  # 1, 3, 5, 7, 9, 11, 13
    loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=sampler, collate_fn=seg_collate)

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[list, list]] = []

        def process(self, batch, outputs, indices) -> None:
            self.calls.append(([o.img_id for o in outputs], list(indices)))

    recorder = Recorder()
    loop = loops.TestLoop(context=None, dataloader=loader, evaluator=None, writers=[recorder])
    for batch in loader:  # as ValLoop._run hands batches on (outputs: the batch's samples)
        batch.pop(SKIPPED_KEY, None)
        loop.after_batch(batch, batch["data_samples"], batch.pop(DROPPED_KEY, []))
    assert recorder.calls == [
        (["val/1"], [1]),  # [1, 3]: 3 dropped
        (["val/5"], [5]),  # [5, 7]: 7 dropped
        ([], []),  # [9, 11]: both dropped
        (["val/13"], [13]),
    ]
    # the real writers take an all-dropped batch (empty lists) and write nothing
    empty = seg_collate([skip_marker(), skip_marker()])
    for writer in (PredictionWriter(tmp_path / "p"), OverlayWriter(tmp_path / "o", palette=[[0, 0, 0]] * 4)):
        writer.process(empty, [], [])
        folder = getattr(writer, "out_dir", None) or writer.show_dir
        assert writer.written == [] and not any(folder.iterdir())


# --- a real run, one process with two DataLoader workers ------------------------------------------------

TRAIN_BAD = {2, 5}  # of 8 training rows (not adjacent: each reach of a bad row is one skip)
VAL_BAD = {1, 4, 5}  # of 7 validation rows: batches of 2 are [0, 1*], [2, 3], [4*, 5*], [6]
VAL_GOOD = [i for i in range(7) if i not in VAL_BAD]


def save_splits(folder: Path) -> None:
    val = rows(7, VAL_BAD, seed=2)
    datasets.DatasetDict({"train": rows(8, TRAIN_BAD, seed=1), "validation": val}).save_to_disk(str(folder))
    good = datasets.DatasetDict({"train": rows(8, set(), seed=1), "validation": val.select(VAL_GOOD)})
    good.save_to_disk(str(folder) + "_good")


def expected_skips(sampler: InfiniteSampler, iters: int, n: int, bad: set[int]) -> list[int]:
    """Per optimizer step (batch_size samples): the bad rows skipped before each sample's stand-in."""
    stream = iter(sampler)
    per_iter = []
    for _ in range(iters):
        count = 0
        for _ in range(sampler.batch_size):
            _, index = next(stream)
            while index in bad:  # the next row (wrapping) is tried after each bad one
                count += 1
                index = (index + 1) % n
        per_iter.append(count)
    return per_iter


def overrides(data: Path, max_iters: int) -> list[str]:
    return [
        *(f"{key}.dataset.path={data}" for key in ("train_dataloader", "val_dataloader", "test_dataloader")),
        *(
            f"{key}.dataset.skip_bad_samples=true"
            for key in ("train_dataloader", "val_dataloader", "test_dataloader")
        ),
        f"train_cfg.max_iters={max_iters}",
        f"train_cfg.val_interval={max_iters}",
        "default_hooks.checkpoint.interval=-1",
        "default_hooks.visualization.num_samples=0",
    ]


def test_run_counts_every_skip_over_workers_and_validates_the_good_rows_only(tmp_path, fresh_accelerate):
    data = tmp_path / "data"
    save_splits(data)
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG)
    max_iters = 6  # 12 samples of 8 rows: two epochs' permutations
    cfg = load_config(
        str(tmp_path / "tiny.yaml"), [*overrides(data, max_iters), "train_dataloader.num_workers=2"]
    )
    runner = Runner(cfg, work_dir=tmp_path / "work")
    runner.train()
    sampler = runner.train_loop.build_sampler(
        8, 2, seed=runner.seed, shuffle=True, rank=0, world_size=1, start_batch=0
    )
    expected = expected_skips(sampler, max_iters, 8, TRAIN_BAD)
    assert sum(expected) >= 2  # the check bites
    train = read_scalars(tmp_path / "work")
    assert [r["bad_samples_skipped"] for r in train] == expected
    log = (tmp_path / "work" / "logs" / "train.log").read_text()
    assert f"skip_bad_samples: {sum(expected)} bad training sample(s) skipped in this run" in log
    assert "index 2" in log and "index 5" in log  # the per-sample warnings name the rows (from the workers)

    # validation dropped the 3 bad rows: its figures are those of the 4 good rows alone
    assert re.search(r"val: 3 bad samples skipped; the metrics cover the 4 others", log)
    val = {k: v for k, v in read_scalars(tmp_path / "work", "val")[-1].items() if k not in ("mode", "iter")}
    model = Segmentor.from_pretrained(tmp_path / "work" / "model")
    good_cfg = load_config(str(tmp_path / "tiny.yaml"), overrides(Path(str(data) + "_good"), max_iters))
    good = Runner(good_cfg, work_dir=tmp_path / "good").test(model=model, loader_key="val_dataloader")
    assert {k: good[k] for k in val} == val
    assert val["aAcc"] > 0

    # test: the same split, predicted masks named by the dataset indices of the good rows
    tester = Runner(cfg, work_dir=tmp_path / "test")
    tested = tester.test(model=model, out_dir=tmp_path / "preds")
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == [f"{i:06d}.png" for i in VAL_GOOD]
    assert {k: tested[k] for k in val} == val


# --- two real processes (gloo) ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_two_processes_sum_their_skips(tmp_path):
    data = tmp_path / "data"
    save_splits(data)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    max_iters = 3  # 2 processes x 2 samples x 3 steps = 12 of 8 rows: two epochs
    launch = two_process_launch()
    work = tmp_path / "run"
    result = subprocess.run(
        [*launch, str(TRAIN_SCRIPT), str(config), "--work-dir", str(work), *overrides(data, max_iters)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    log = (work / "logs" / "train.log").read_text()
    assert "processes           : 2 (MULTI_CPU)" in log
    seed = int(load_config(str(config)).get("seed", 0))
    per_rank = [
        expected_skips(InfiniteSampler(8, 2, seed=seed, rank=rank, world_size=2), max_iters, 8, TRAIN_BAD)
        for rank in (0, 1)
    ]
    expected = [a + b for a, b in zip(*per_rank)]
    assert sum(per_rank[1]) > 0  # the second process's skips are in the figures
    assert [r["bad_samples_skipped"] for r in read_scalars(work)] == expected
    assert f"skip_bad_samples: {sum(expected)} bad training sample(s) skipped in this run" in log
    # validation shards: process 0 has rows 0, 2, 4*, 6 and process 1 rows 1*, 3, 5*
    assert "val: 3 bad samples skipped; the metrics cover the 4 others" in log
