"""Every kind of source a config can name; column detection, class names, palettes, held-out splits."""

import io
import json
import logging

import datasets
import numpy as np
import pytest
from PIL import Image

from segaccel.data import SampleError, build_dataset, build_hf_dataset, dataset_id2label
from segaccel.data.classes import check_palette
from segaccel.data.rows import resolve_columns
from segaccel.registry import ConfigError

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def rows(
    n: int, offset: int = 0, image_column: str = "image", label_column: str = "label"
) -> datasets.Dataset:
    """`n` rows: image i is filled with i, its label map with i % 3 (and one ignored pixel)."""
    images, labels = [], []
    for i in range(offset, offset + n):
        label = np.full((6, 8), i % 3, np.uint8)
        label[0, 0] = 255
        images.append({"bytes": png(np.full((6, 8, 3), i, np.uint8)), "path": f"img_{i}.png"})
        labels.append({"bytes": png(label), "path": None})
    features = datasets.Features({image_column: datasets.Image(), label_column: datasets.Image()})
    return datasets.Dataset.from_dict({image_column: images, label_column: labels}, features=features)


def ids(dataset) -> list[int]:
    """The fill value of each sample's image: which rows a dataset holds."""
    return sorted(int(dataset[i]["inputs"][0, 3, 3]) for i in range(len(dataset)))


def hub_layout(root, splits: dict[str, int], **columns) -> str:
    """A folder laid out like a Hub dataset repo of parquet files: data/<split>-00000-of-00001.parquet."""
    (root / "data").mkdir(parents=True)
    offset = 0
    for split, n in splits.items():
        rows(n, offset, **columns).to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
        offset += n
    return str(root)


# --- sources -------------------------------------------------------------------------------------------


def test_local_folder_laid_out_like_a_hub_repo(tmp_path):
    path = hub_layout(tmp_path / "repo", {"train": 5, "validation": 3})
    train = build_dataset({"path": path}, "train", num_classes=3)
    val = build_dataset({"path": path}, "val", num_classes=3)  # `val` finds `validation`
    assert ids(train) == [0, 1, 2, 3, 4] and ids(val) == [5, 6, 7]
    assert train.image_column == "image" and train.label_column == "label"
    assert val[0]["data_samples"].img_path == "img_5.png"
    assert val.split == "val" and val.name == path


def test_parquet_builder_with_data_files_and_split_slicing(tmp_path):
    rows(6).to_parquet(str(tmp_path / "a.parquet"))
    cfg = {"path": "parquet", "data_files": {"train": str(tmp_path / "a.parquet")}, "validation_split": 0}
    assert ids(build_dataset(cfg, "train")) == [0, 1, 2, 3, 4, 5]
    assert ids(build_dataset({**cfg, "split": "train[:2]"}, "ignored")) == [0, 1]  # passed to load_dataset


def test_imagefolder_with_masks_listed_in_metadata(tmp_path):
    folder = tmp_path / "imagefolder" / "train"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    with open(folder / "metadata.jsonl", "w") as f:
        for i in range(3):
            Image.fromarray(np.full((6, 8, 3), 10 * i, np.uint8)).save(folder / "images" / f"{i}.png")
            Image.fromarray(np.full((6, 8), i, np.uint8)).save(folder / "masks" / f"{i}.png")
            f.write(json.dumps({"file_name": f"images/{i}.png", "label_file_name": f"masks/{i}.png"}) + "\n")
    cfg = {"path": "imagefolder", "data_dir": str(tmp_path / "imagefolder"), "validation_split": 0}
    ds = build_dataset(cfg, "train", num_classes=3)
    labels = sorted(int(ds[i]["data_samples"].gt_sem_seg.data[0, 0, 0]) for i in range(3))
    assert len(ds) == 3 and labels == [0, 1, 2]


def test_load_from_disk_dataset_and_dataset_dict(tmp_path):
    datasets.DatasetDict({"train": rows(4), "validation": rows(2, 4)}).save_to_disk(str(tmp_path / "dict"))
    rows(3).save_to_disk(str(tmp_path / "single"))
    assert ids(build_dataset({"path": str(tmp_path / "dict")}, "validation")) == [4, 5]
    assert ids(build_dataset({"path": str(tmp_path / "single")}, "train")) == [0, 1, 2]
    with pytest.raises(ConfigError, match="save_to_disk folder"):
        build_hf_dataset({"path": str(tmp_path / "dict"), "streaming": True}, "train")


def test_config_with_name_data_dir_and_readme_configs(tmp_path):
    # A repo with two configs declared in its README, as Hub dataset repos declare them.
    root = tmp_path / "repo"
    for config, offset in (("fine", 0), ("coarse", 10)):
        (root / config).mkdir(parents=True)
        rows(2, offset).to_parquet(str(root / config / "train.parquet"))
        rows(1, offset + 5).to_parquet(str(root / config / "validation.parquet"))
    (root / "README.md").write_text(
        "---\nconfigs:\n"
        + "".join(
            f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train.parquet\n"
            f"  - split: validation\n    path: {c}/validation.parquet\n"
            for c in ("fine", "coarse")
        )
        + "---\n"
    )
    assert ids(build_dataset({"path": str(root), "name": "coarse"}, "train")) == [10, 11]
    assert ids(build_dataset({"path": str(root), "data_dir": "fine"}, "validation")) == [5]


def test_hub_id_arguments_reach_load_dataset(monkeypatch):
    """Offline: what a Hub dataset config hands to `datasets.load_dataset` (ours never leak)."""
    calls = []

    def fake_load_dataset(**kwargs):
        calls.append(kwargs)
        return datasets.DatasetDict({"train": rows(3), "validation": rows(2, 3)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = {
        "path": "org/segmentation-set",
        "name": "default",
        "revision": "v1.0",
        "data_dir": "data",
        "data_files": {"train": "data/train-*.parquet"},
        "cache_dir": "/tmp/x",
        "image_column": "image",
        "label_column": "label",
        "reduce_zero_label": True,
        "label_map": {1: 2},
        "ignore_index": 255,
        "id2label": ["a", "b", "c"],
        "palette": [[0, 0, 0], [1, 1, 1], [2, 2, 2]],
        "pipeline": [{"type": "PackSegInputs"}],
        "validation_split": 0.2,
        "split_seed": 3,
        "shuffle_buffer_size": 10,
    }
    assert ids(build_dataset(cfg, "validation")) == [3, 4]
    assert calls == [
        {
            "path": "org/segmentation-set",
            "name": "default",
            "revision": "v1.0",
            "data_dir": "data",
            "data_files": {"train": "data/train-*.parquet"},
            "cache_dir": "/tmp/x",
            "split": None,  # the whole source; the split is picked (or held out) by us
        }
    ]


# --- column detection ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image_column, label_column",
    [
        ("image", "label"),
        ("pixel_values", "label"),
        ("image", "annotation"),
        ("image", "mask"),
        ("pixel_values", "semantic_map"),
    ],
)
def test_common_column_names_are_recognised(tmp_path, image_column, label_column):
    path = hub_layout(
        tmp_path / "repo", {"train": 2, "validation": 2}, image_column=image_column, label_column=label_column
    )
    ds = build_dataset({"path": path}, "train", num_classes=3)
    assert (ds.image_column, ds.label_column) == (image_column, label_column)
    assert ds[0]["data_samples"].gt_sem_seg.data.shape == (1, 6, 8)


def test_column_detection_prefers_the_config_and_says_what_it_saw():
    assert resolve_columns({}, ["pixel_values", "image", "mask", "label"]) == ("image", "label")
    assert resolve_columns({"image_column": "rgb", "label_column": "seg"}, ["rgb", "seg"]) == ("rgb", "seg")
    assert resolve_columns({"label_column": None}, ["image"]) == ("image", None)  # inference: no labels
    with pytest.raises(SampleError, match=r"split 'train': no label column found among \['image', 'depth'\]"):
        resolve_columns({}, ["image", "depth"], "dataset 'x' split 'train'")
    with pytest.raises(SampleError, match="no image column found"):
        resolve_columns({}, ["photo", "label"])


# --- class names and palette -----------------------------------------------------------------------------


def test_id2label_inline_list_or_dict():
    assert dataset_id2label({"path": "x", "id2label": {"0": "sky", "1": "road"}}) == {0: "sky", 1: "road"}
    assert dataset_id2label({"path": "x", "id2label": ["sky", "road"]}) == {0: "sky", 1: "road"}
    with pytest.raises(ConfigError, match="without gaps"):
        dataset_id2label({"path": "x", "id2label": {0: "sky", 2: "road"}})


def test_id2label_from_a_json_file_in_the_local_dataset_folder(tmp_path):
    path = hub_layout(tmp_path / "repo", {"train": 2, "validation": 1})
    (tmp_path / "repo" / "id2label.json").write_text(json.dumps({"0": "a", "1": "b", "2": "c"}))
    (tmp_path / "repo" / "names.json").write_text(json.dumps(["x", "y", "z"]))
    assert dataset_id2label({"path": path, "id2label": "names.json"}) == {0: "x", 1: "y", 2: "z"}
    # no id2label configured: the folder's id2label.json is found
    assert build_dataset({"path": path}, "train", num_classes=3).id2label == {0: "a", 1: "b", 2: "c"}
    with pytest.raises(ConfigError, match="no file 'missing.json'"):
        dataset_id2label({"path": path, "id2label": "missing.json"})


def test_id2label_from_a_json_file_in_the_hub_repo(monkeypatch, tmp_path):
    import huggingface_hub

    (tmp_path / "id2label.json").write_text(json.dumps({"0": "unlabeled", "1": "flat-road"}))
    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        return str(tmp_path / "id2label.json")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    cfg = {"path": "segments/sidewalk-semantic", "revision": "main", "id2label": "id2label.json"}
    assert dataset_id2label(cfg) == {0: "unlabeled", 1: "flat-road"}
    assert calls == [
        {
            "repo_id": "segments/sidewalk-semantic",
            "filename": "id2label.json",
            "repo_type": "dataset",
            "revision": "main",
        }
    ]


def test_id2label_from_the_label_features_class_names():
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.Sequence(datasets.Sequence(datasets.ClassLabel(names=["bg", "cat"]))),
        }
    )
    data = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": png(np.zeros((2, 3, 3), np.uint8)), "path": None}],
            "label": [[[0, 1, 1], [0, 0, 1]]],
        },
        features=features,
    )
    assert dataset_id2label({"path": "x"}, data) == {0: "bg", 1: "cat"}


def test_palette_is_checked():
    assert check_palette([[0, 0, 0], [255, 1, 2]], 2) == [[0, 0, 0], [255, 1, 2]]
    with pytest.raises(ConfigError, match="2 colours for 3 classes"):
        check_palette([[0, 0, 0], [1, 1, 1]], 3)
    with pytest.raises(ConfigError, match="0..255"):
        check_palette([[0, 0, 300]], 1)


def test_ignore_index_from_the_config(tmp_path):
    path = hub_layout(tmp_path / "repo", {"train": 1, "validation": 1})
    with pytest.raises(SampleError, match=r"labels \[255\] are outside \[0, 3\) and not ignore_index 254"):
        build_dataset({"path": path, "ignore_index": 254}, "train", num_classes=3)[0]
    assert build_dataset(
        {"path": path, "label_map": {255: 254}, "ignore_index": 254}, "train", num_classes=3
    )[0]


# --- no validation split -----------------------------------------------------------------------------------


def test_no_validation_split_holds_out_a_seeded_part_of_train(tmp_path, caplog):
    path = hub_layout(tmp_path / "repo", {"train": 20})
    caplog.set_level(logging.INFO, logger="segaccel")
    train = ids(build_dataset({"path": path}, "train"))
    val = ids(build_dataset({"path": path}, "validation"))
    assert len(val) == 2 and len(train) == 18 and not set(train) & set(val)  # 10 %, disjoint
    assert "holding out 2 of the 20 'train' samples as validation" in caplog.text
    assert ids(build_dataset({"path": path}, "validation")) == val  # seeded: the same every time
    other = ids(build_dataset({"path": path, "split_seed": 1, "validation_split": 5}, "validation"))
    assert len(other) == 5 and other != val
    assert len(ids(build_dataset({"path": path, "validation_split": 0}, "train"))) == 20
    with pytest.raises(ConfigError, match=r"no split 'validation'.*validation_split: 0"):
        build_dataset({"path": path, "validation_split": 0}, "validation")
