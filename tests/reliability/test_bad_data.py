"""Bad data: corrupt and truncated files, size mismatches, bad labels, empty splits, and `skip_bad_samples`.

The per-mode conversions (grayscale, RGBA, palette, CMYK → RGB; 16-bit masks read as ids; 16-bit images
refused) and the basic errors are tested in tests/data/test_bad_input.py; here: what is left, and the
option that skips bad rows instead of stopping.
"""

import io
import logging

import datasets
import numpy as np
import pytest
from PIL import Image

from segaccel.data import SampleError, SegDataset, build_dataset
from segaccel.data.streaming import SegStreamDataset
from segaccel.registry import ConfigError

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})


def png(array: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def image(h: int = 4, w: int = 6, value: int = 0) -> dict:
    return png(np.full((h, w, 3), value, np.uint8))


def mask(h: int = 4, w: int = 6, value: int = 1) -> dict:
    return png(np.full((h, w), value, np.uint8))


def truncated(entry: dict) -> dict:
    return {"bytes": entry["bytes"][: len(entry["bytes"]) // 2], "path": None}


# row 0 good, 1 truncated PNG, 2 good, 3 mask size differs, 4 label 9 out of range, 5 good
ROWS = {
    "image": [image(value=0), truncated(image()), image(value=2), image(), image(), image(value=5)],
    "label": [mask(), mask(), mask(), mask(4, 5), mask(value=9), mask()],
}


def hf_rows() -> datasets.Dataset:
    return datasets.Dataset.from_dict(ROWS, features=FEATURES)


def test_truncated_png_names_dataset_split_index_and_column():
    ds = SegDataset(hf_rows(), pipeline=None, name="city", split="train", num_classes=3)
    with pytest.raises(SampleError, match=r"dataset 'city' split 'train' index 1: .*column 'image'"):
        ds[1]


def test_skip_bad_samples_stands_in_the_next_good_row_and_counts(caplog):
    ds = SegDataset(
        hf_rows(), pipeline=None, name="city", split="train", num_classes=3, skip_bad_samples=True
    )
    with caplog.at_level(logging.WARNING, logger="segaccel"):
        ids = [ds[i]["data_samples"].img_id for i in range(len(ds))]
    # bad rows 1, 3 and 4 are replaced by the next good one (wrapping around); each time counted
    assert ids == ["train/0", "train/2", "train/2", "train/5", "train/5", "train/5"]
    assert ds.num_skipped == 1 + 2 + 1
    assert len(ds[(3, 1)]["inputs"].shape) == 3  # any epoch
    text = caplog.text
    assert "index 1" in text and "index 3" in text and "index 4" in text
    assert "skip_bad_samples: skipped (4 so far here)" in text


def test_skip_bad_samples_when_every_row_is_bad():
    rows = datasets.Dataset.from_dict(
        {"image": [truncated(image())] * 2, "label": [mask()] * 2}, features=FEATURES
    )
    ds = SegDataset(rows, pipeline=None, name="city", split="train", skip_bad_samples=True)
    with pytest.raises(SampleError, match=r"split 'train': skip_bad_samples: all 2 samples are bad"):
        ds[0]
    assert ds.num_skipped == 2


def test_skip_bad_samples_from_the_dataset_config(tmp_path):
    hf_rows().save_to_disk(str(tmp_path / "data"))
    cfg = {"path": str(tmp_path / "data"), "skip_bad_samples": True, "pipeline": [{"type": "PackSegInputs"}]}
    ds = build_dataset(cfg, "train", num_classes=3, training=True)
    assert ds.skip_bad_samples and ds.fill_skipped and ds[4]["data_samples"].img_id == "train/5"
    assert ds[4]["num_skipped"] == 1
    # evaluation: a bad sample is dropped (a marker with the count), never replaced by another one
    evaluation = build_dataset(cfg, "train", num_classes=3, training=False)
    assert not evaluation.fill_skipped and evaluation[4] == {"num_skipped": 1}
    strict = build_dataset({**cfg, "skip_bad_samples": False}, "train", num_classes=3)
    with pytest.raises(SampleError, match="index 4: mask labels \\[9\\] are outside \\[0, 3\\)"):
        strict[4]


def test_skip_bad_samples_in_a_stream():
    stream = hf_rows().to_iterable_dataset()
    strict = SegStreamDataset(stream, pipeline=None, name="city", split="train", num_classes=3)
    with pytest.raises(SampleError, match=r"split 'train' index 1 \(stream position"):
        list(strict)
    ds = SegStreamDataset(
        stream, pipeline=None, name="city", split="train", num_classes=3, skip_bad_samples=True
    )
    outs = list(ds)
    assert [int(o["inputs"][0, 0, 0]) for o in outs] == [0, 2, 5]
    assert [o.get("num_skipped", 0) for o in outs] == [0, 1, 2]  # the skips ride on the next sample
    assert ds.num_skipped == 3


def test_an_empty_split():
    empty = datasets.Dataset.from_dict({"image": [], "label": []}, features=FEATURES)
    ds = SegDataset(empty, pipeline=None, name="city", split="val")
    assert len(ds) == 0
    with pytest.raises(IndexError, match=r"dataset 'city' split 'val': index 0 out of range for 0 samples"):
        ds[0]


def test_an_empty_split_saved_to_disk(tmp_path):
    empty = datasets.Dataset.from_dict({"image": [], "label": []}, features=FEATURES)
    datasets.DatasetDict({"train": hf_rows(), "validation": empty}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"dataset '.*d': cannot be read, is a split empty"):
        build_dataset({"path": str(tmp_path / "d")}, "train")


def test_a_split_that_does_not_exist(tmp_path):
    datasets.DatasetDict({"train": hf_rows()}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ConfigError, match=r"has no split 'test'; its splits are \['train'\]"):
        build_dataset({"path": str(tmp_path / "d")}, "test")


def test_training_run_with_skip_bad_samples(tmp_path):
    """A real (tiny) run over a split with a truncated image and an out-of-range mask trains to the end."""
    from engine_helpers import TINY_CONFIG, read_scalars

    from segaccel.config import load_config
    from segaccel.engine.runner import Runner

    rng = np.random.default_rng(0)
    images = [png(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)) for _ in range(8)]
    masks = [png(rng.integers(0, 4, (32, 48), dtype=np.uint8)) for _ in range(8)]
    images[2] = truncated(images[2])
    masks[5] = mask(32, 48, value=9)
    datasets.Dataset.from_dict({"image": images, "label": masks}, features=FEATURES).save_to_disk(
        str(tmp_path / "data")
    )
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG)
    overrides = [
        f"train_dataloader.dataset.path={tmp_path / 'data'}",
        "train_dataloader.num_workers=0",
        "train_dataloader.dataset.skip_bad_samples=true",
        "train_cfg.max_iters=4",
        "train_cfg.val_interval=100",
        "default_hooks.checkpoint.interval=100",
    ]
    cfg = load_config(str(tmp_path / "tiny.yaml"), overrides)
    Runner(cfg, work_dir=tmp_path / "work").train()
    assert [r["iter"] for r in read_scalars(tmp_path / "work")][-1] == 4
    log = (tmp_path / "work" / "logs" / "train.log").read_text()  # the Runner's log (no propagation)
    assert "skip_bad_samples: skipped" in log and "index 2" in log
