"""The built-in synthetic dataset: sizes, determinism, learnable-by-shape-only, cache behaviour."""

import errno
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest

from segaccel.data import synthetic
from segaccel.data.synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_PALETTE,
    load_synthetic_dataset,
    synthetic_id2label,
)

SMALL = dict(num_train=24, num_val=6, image_size=(40, 56), max_objects=3, seed=3)


def raw_bytes(split: datasets.Dataset, column: str) -> list[bytes]:
    """The stored PNG bytes of a column, without decoding."""
    return [row[column]["bytes"] for row in split.cast_column(column, datasets.Image(decode=False))]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return load_synthetic_dataset(**SMALL, cache_dir=tmp_path_factory.mktemp("cache"))


def test_split_sizes_and_non_square_shapes(small):
    assert set(small) == {"train", "validation"}
    assert (len(small["train"]), len(small["validation"])) == (24, 6)
    assert isinstance(small["train"].features["image"], datasets.Image)
    assert isinstance(small["train"].features["label"], datasets.Image)
    row = small["validation"][0]
    assert row["image"].mode == "RGB" and row["label"].mode == "L"
    assert np.asarray(row["image"]).shape == (40, 56, 3)  # image_size is (h, w)
    assert np.asarray(row["label"]).shape == (40, 56)


def test_labels_are_class_ids_and_every_image_has_an_object(small):
    seen = set()
    for row in small["train"]:
        label = np.asarray(row["label"])
        values = set(np.unique(label).tolist())
        assert values <= {0, 1, 2, 3}
        assert values - {0}, "the last object drawn is never occluded, so some object is visible"
        seen |= values
    assert seen == {0, 1, 2, 3}


def test_class_names_and_palette():
    assert synthetic_id2label() == {0: "background", 1: "circle", 2: "square", 3: "triangle"}
    assert len(SYNTHETIC_PALETTE) == len(SYNTHETIC_CLASSES)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in SYNTHETIC_PALETTE)


def test_same_arguments_give_identical_bytes(tmp_path, small):
    again = load_synthetic_dataset(**SMALL, cache_dir=tmp_path)  # a fresh cache: generated again
    for split in ("train", "validation"):
        for column in ("image", "label"):
            assert raw_bytes(again[split], column) == raw_bytes(small[split], column)
    other_seed = load_synthetic_dataset(**{**SMALL, "seed": 4}, cache_dir=tmp_path)
    assert raw_bytes(other_seed["train"], "image") != raw_bytes(small["train"], "image")
    # train and validation are different images
    assert not set(raw_bytes(small["validation"], "image")) & set(raw_bytes(small["train"], "image"))


def test_classes_cannot_be_told_by_colour(tmp_path):
    ds = load_synthetic_dataset(num_train=300, num_val=1, image_size=(32, 48), seed=0, cache_dir=tmp_path)
    colours = {c: [] for c in range(len(SYNTHETIC_CLASSES))}  # mean RGB of each class region per image
    for row in ds["train"]:
        img = np.asarray(row["image"], dtype=np.float64)
        label = np.asarray(row["label"])
        for c in np.unique(label):
            colours[int(c)].append(img[label == c].mean(axis=0))
    colours = {c: np.array(v) for c, v in colours.items()}
    assert all(len(v) > 100 for v in colours.values())
    means = np.array([v.mean(axis=0) for v in colours.values()])
    # Colours vary a lot within each class, but the class averages are all about the same grey.
    assert min(v.std(axis=0).min() for v in colours.values()) > 50
    assert np.abs(means[:, None] - means[None]).max() < 25
    # A nearest-mean-colour classifier of the object classes does no better than chance (1/3).
    objects = [1, 2, 3]
    centroids = np.array([colours[c][::2].mean(axis=0) for c in objects])
    test = [(x, i) for i, c in enumerate(objects) for x in colours[c][1::2]]
    hits = sum(int(np.argmin(((centroids - x) ** 2).sum(axis=1)) == i) for x, i in test)
    assert hits / len(test) < 0.45


def test_second_call_loads_the_cache_without_generating(tmp_path, monkeypatch):
    first = load_synthetic_dataset(**SMALL, cache_dir=tmp_path)
    folders = list((tmp_path / "synthetic").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("synthetic-")

    def no_generation(*args, **kwargs):
        raise AssertionError("the cached dataset should have been loaded, not generated")

    monkeypatch.setattr(synthetic, "generate_synthetic_split", no_generation)
    second = load_synthetic_dataset(**SMALL, cache_dir=tmp_path)
    assert raw_bytes(second["train"], "image") == raw_bytes(first["train"], "image")
    with pytest.raises(AssertionError, match="should have been loaded"):
        load_synthetic_dataset(**{**SMALL, "num_val": 7}, cache_dir=tmp_path)  # other arguments, other folder


def test_cache_dir_defaults_to_segaccel_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGACCEL_CACHE", str(tmp_path / "env-cache"))
    ds = load_synthetic_dataset(num_train=2, num_val=1, image_size=(16, 24))
    assert len(ds["train"]) == 2
    assert len(list((tmp_path / "env-cache" / "synthetic").iterdir())) == 1


def test_interrupted_write_never_looks_complete(tmp_path, monkeypatch):
    calls = []

    def fail_on_validation(params, split):
        calls.append(split)
        if split == "validation":
            raise KeyboardInterrupt("interrupted")
        return real(params, split)

    real = synthetic.generate_synthetic_split
    monkeypatch.setattr(synthetic, "generate_synthetic_split", fail_on_validation)
    with pytest.raises(KeyboardInterrupt):
        load_synthetic_dataset(**SMALL, cache_dir=tmp_path)
    assert calls == ["train", "validation"]
    assert list((tmp_path / "synthetic").iterdir()) == []  # nothing complete, temporary folder removed

    # A temporary folder left by a killed process (no cleanup ran) is ignored.
    monkeypatch.setattr(synthetic, "generate_synthetic_split", real)
    load_synthetic_dataset(**SMALL, cache_dir=tmp_path)
    (target,) = (tmp_path / "synthetic").iterdir()
    shutil.rmtree(target)
    leftover = target.parent / f".{target.name}.tmp-deadbeef"
    leftover.mkdir()
    (leftover / "dataset_dict.json").write_text("{ half written")
    ds = load_synthetic_dataset(**SMALL, cache_dir=tmp_path)
    assert (len(ds["train"]), len(ds["validation"])) == (24, 6)
    assert (target / "dataset_dict.json").is_file()


def test_losing_the_rename_race_uses_the_winner(tmp_path, monkeypatch):
    real_rename = synthetic.os.rename

    def racing_rename(src, dst):
        if Path(dst).name.startswith("synthetic-"):
            shutil.copytree(src, dst)  # another process finished first
            raise OSError(errno.ENOTEMPTY, "Directory not empty", str(dst))
        return real_rename(src, dst)

    monkeypatch.setattr(synthetic.os, "rename", racing_rename)
    ds = load_synthetic_dataset(**SMALL, cache_dir=tmp_path)
    assert len(ds["train"]) == 24
    assert [p.name.startswith("synthetic-") for p in (tmp_path / "synthetic").iterdir()] == [True]


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        load_synthetic_dataset(image_size=(0, 10), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="min_objects"):
        load_synthetic_dataset(min_objects=4, max_objects=3, cache_dir=tmp_path)
