"""`use_dataset`: `--dataset PATH_OR_HUB_ID` points every loader at one source, with its own splits,
columns found by name and classes from the data; nothing of the old dataset is left in the config."""

import pytest
from dataset_folders import CLASSES, write_parquet_folder

from segaccel.config import load_config
from segaccel.data import dataset_from_config
from segaccel.data.dataset_spec import canonical_split, source_splits, use_dataset
from segaccel.engine.build import model_config
from segaccel.registry import ConfigError

QUICKSTART = "configs/quickstart.yaml"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_parquet_folder(tmp_path_factory.mktemp("own") / "data_dir", {"train": 6, "validation": 3})


def test_every_loader_reads_the_source_and_nothing_of_the_old_dataset_stays(folder):
    cfg = use_dataset(load_config(QUICKSTART), str(folder))
    splits = {
        k: cfg[k]["dataset"]["split"] for k in ("train_dataloader", "val_dataloader", "test_dataloader")
    }
    assert splits == {
        "train_dataloader": "train",
        "val_dataloader": "validation",
        "test_dataloader": "validation",
    }
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = cfg[key]["dataset"]
        assert dataset["path"] == str(folder)
        assert set(dataset) == {"path", "split", "pipeline"}  # no synthetic:, no pinned columns
    assert [t["type"] for t in cfg["train_dataloader"]["dataset"]["pipeline"]] == [
        "RandomFlip",
        "PackSegInputs",
    ]
    assert "dataset" not in cfg
    # the head sized to the folder's id2label.json; the names travel into config.json
    assert cfg["model"]["decode_head"]["num_classes"] == len(CLASSES)
    val = dataset_from_config(cfg, "val")
    assert (len(val), val.split, val.image_column, val.label_column) == (
        3,
        "validation",
        "pixel_values",
        "annotation",
    )
    assert model_config(cfg, val.id2label)["id2label"] == {str(i): name for i, name in enumerate(CLASSES)}


def test_test_loader_reads_the_test_split_when_the_source_has_one(tmp_path):
    folder = write_parquet_folder(tmp_path / "d", {"train": 3, "validation": 2, "test": 2})
    assert source_splits({"path": str(folder)}) == ["train", "validation", "test"]
    cfg = use_dataset(load_config(QUICKSTART), str(folder))
    assert cfg["test_dataloader"]["dataset"]["split"] == "test"
    assert len(dataset_from_config(cfg, "test")) == 2


def test_a_source_without_validation_holds_part_of_train_out(tmp_path):
    folder = write_parquet_folder(tmp_path / "d", {"train": 10})
    cfg = use_dataset(load_config(QUICKSTART), str(folder))
    assert (
        cfg["val_dataloader"]["dataset"]["split"]
        == cfg["test_dataloader"]["dataset"]["split"]
        == "validation"
    )
    assert len(dataset_from_config(cfg, "val")) == 1 and len(dataset_from_config(cfg, "train")) == 9


def test_a_dataset_block_names_columns_and_classes_on_purpose(folder):
    cfg = load_config(QUICKSTART, ["dataset.image_column=pixel_values", "dataset.id2label=[a, b, c, d, e]"])
    cfg = use_dataset(cfg, str(folder))
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert cfg[key]["dataset"]["image_column"] == "pixel_values"
    assert cfg["model"]["decode_head"]["num_classes"] == 5
    assert use_dataset(load_config(QUICKSTART, [f"dataset.path={folder}"]))["val_dataloader"]["dataset"][
        "path"
    ] == str(folder)


def test_classes_unknown_before_loading_come_from_the_data_or_a_clear_error(tmp_path):
    folder = write_parquet_folder(tmp_path / "d", {"train": 3, "validation": 2})
    (folder / "id2label.json").unlink()
    cfg = use_dataset(load_config(QUICKSTART), str(folder))
    assert cfg["model"]["decode_head"]["num_classes"] is None
    with pytest.raises(ConfigError, match="names no classes.*dataset.id2label"):
        model_config(cfg, None)
    assert model_config(cfg, {0: "a", 1: "b"})["decode_head"]["num_classes"] == 2


def test_evaluating_a_trained_model_leaves_the_model_alone(folder):
    cfg = use_dataset(load_config(QUICKSTART), str(folder), resize_model=False)
    assert cfg["model"]["decode_head"]["num_classes"] == 4


def test_split_aliases():
    assert [canonical_split(s) for s in ("val", "valid", "validation", "train", "test")] == [
        "validation",
        "validation",
        "validation",
        "train",
        "test",
    ]
