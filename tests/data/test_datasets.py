"""SegDataset and the config loaders on tiny hand-made Hugging Face datasets."""

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from segaccel.data import (
    SampleError,
    SegDataset,
    build_dataset,
    build_hf_dataset,
    dataset_id2label,
    map_labels,
    seg_collate,
)
from segaccel.registry import ConfigError

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
LABELS = np.array([[0, 1, 2, 255], [2, 2, 1, 0], [0, 0, 0, 1]], np.uint8)  # (h, w) = (3, 4)


def rgb(h: int = 3, w: int = 4, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def tiny(images: list, labels: list, features=FEATURES) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def gt_of(output: dict) -> np.ndarray:
    return output["data_samples"].gt_sem_seg.data[0].numpy()


@pytest.fixture
def two_rows() -> datasets.Dataset:
    return tiny([rgb(seed=0), rgb(seed=1)], [Image.fromarray(LABELS), Image.fromarray(LABELS[::-1].copy())])


def test_row_is_packed_with_metainfo(two_rows):
    ds = SegDataset(two_rows, pipeline=None, split="validation", name="tiny")
    assert len(ds) == 2
    out = ds[1]
    assert out["inputs"].shape == (3, 3, 4) and out["inputs"].dtype == torch.uint8
    assert torch.equal(out["inputs"], torch.from_numpy(np.array(rgb(seed=1))).permute(2, 0, 1))
    assert np.array_equal(gt_of(out), LABELS[::-1])
    meta = out["data_samples"].metainfo
    assert meta["img_id"] == "validation/1" and meta["img_path"] is None
    assert meta["ori_shape"] == meta["img_shape"] == (3, 4) and meta["reduce_zero_label"] is False
    assert ds[-1]["data_samples"].img_id == "validation/1"
    with pytest.raises(IndexError, match="index 2 out of range"):
        ds[2]


def test_reduce_zero_label_and_label_map(two_rows):
    reduced = SegDataset(two_rows, pipeline=None, reduce_zero_label=True)
    expected = np.array([[255, 0, 1, 255], [1, 1, 0, 255], [255, 255, 255, 0]])
    assert np.array_equal(gt_of(reduced[0]), expected)
    assert reduced[0]["data_samples"].reduce_zero_label is True
    swapped = SegDataset(two_rows, pipeline=None, label_map={1: 2, 2: 1})  # swaps, as mmseg (maps a copy)
    assert np.array_equal(gt_of(swapped[0]), [[0, 2, 1, 255], [1, 1, 2, 0], [0, 0, 0, 2]])
    both = SegDataset(two_rows, pipeline=None, reduce_zero_label=True, label_map={"0": 7})  # after reduction
    assert np.array_equal(gt_of(both[0]), np.where(expected == 0, 7, expected))


def test_map_labels_on_wide_dtypes():
    wide = np.array([[0, 1, 300], [255, 2, 0]], np.uint16)
    assert np.array_equal(map_labels(wide, reduce_zero_label=True), [[255, 0, 299], [255, 1, 255]])
    assert map_labels(LABELS, label_map={1: 1000}).dtype == np.int64  # does not fit uint8
    assert map_labels(LABELS).dtype == np.uint8


def test_masks_are_read_as_stored_and_images_converted_to_rgb():
    palette_mask = Image.fromarray(LABELS)
    palette_mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [9] * (256 * 3 - 9))  # L becomes P
    gray = Image.fromarray(np.full((3, 4), 77, np.uint8))
    rgba = Image.new("RGBA", (4, 3), (10, 20, 30, 40))
    rows = tiny([gray, rgba], [palette_mask, Image.fromarray(LABELS)])
    assert rows[0]["label"].mode == "P" and rows[0]["image"].mode == "L" and rows[1]["image"].mode == "RGBA"
    ds = SegDataset(rows, pipeline=None)
    assert np.array_equal(gt_of(ds[0]), LABELS)  # palette indices, not colours
    assert (ds[0]["inputs"] == 77).all() and ds[0]["inputs"].shape == (3, 3, 4)
    assert ds[1]["inputs"][:, 0, 0].tolist() == [10, 20, 30]


def test_epoch_and_index_seed_the_augmentation(two_rows):
    same_image = tiny([rgb(8, 12, seed=5)] * 2, [Image.fromarray(np.zeros((8, 12), np.uint8))] * 2)
    pipeline = [
        {"type": "PhotoMetricDistortion"},
        {"type": "RandomCrop", "crop_size": [5, 7]},
        {"type": "PackSegInputs"},
    ]
    ds = SegDataset(same_image, pipeline=pipeline, seed=11)
    first = ds[(3, 0)]["inputs"]
    assert torch.equal(first, ds[(3, 0)]["inputs"])  # reproducible
    assert torch.equal(ds[0]["inputs"], ds[(0, 0)]["inputs"])  # a plain index is epoch 0
    assert not torch.equal(first, ds[(3, 1)]["inputs"])  # same image, other index: other augmentation
    epochs = {ds[(e, 0)]["inputs"].numpy().tobytes() for e in range(5)}
    assert len(epochs) >= 4  # the augmentation changes with the epoch
    other_seed = SegDataset(same_image, pipeline=pipeline, seed=12)
    assert not torch.equal(first, other_seed[(3, 0)]["inputs"])


def test_dataloader_workers_see_the_same_augmentation():
    rows = tiny([rgb(24, 40, seed=i) for i in range(4)], [Image.fromarray(np.zeros((24, 40), np.uint8))] * 4)
    pipeline = [
        {"type": "RandomResize", "scale": [80, 48], "ratio_range": [0.5, 2.0]},
        {"type": "RandomCrop", "crop_size": [16, 20]},
        {"type": "RandomFlip", "prob": 0.5},
        {"type": "PhotoMetricDistortion"},
        {"type": "PackSegInputs"},
    ]
    ds = SegDataset(rows, pipeline=pipeline, seed=2)

    def images(num_workers: int) -> list[torch.Tensor]:
        indices = [(1, i) for i in range(4)]
        loader = torch.utils.data.DataLoader(
            ds, batch_size=2, sampler=indices, num_workers=num_workers, collate_fn=seg_collate
        )
        batches = list(loader)
        assert all(len(b["inputs"]) == len(b["data_samples"]) == 2 for b in batches)
        return [t for b in batches for t in b["inputs"]]

    assert all(torch.equal(a, b) for a, b in zip(images(0), images(2)))


def test_missing_column_lists_the_columns(two_rows):
    with pytest.raises(SampleError, match=r"'tiny' split 'train'.*\['mask'\].*\['image', 'label'\]"):
        SegDataset(two_rows, pipeline=None, label_column="mask", name="tiny", split="train")


def test_size_mismatch_names_the_sample():
    ds = SegDataset(tiny([rgb(3, 4), rgb(5, 4)], [Image.fromarray(LABELS)] * 2), pipeline=None, split="train")
    ds[0]
    with pytest.raises(
        SampleError, match=r"split 'train' index 1: image size .*\(5, 4\).*mask size .*\(3, 4\)"
    ):
        ds[1]


def test_out_of_range_labels_name_the_values(two_rows):
    ds = SegDataset(two_rows, pipeline=None, num_classes=2, split="train", name="tiny")
    with pytest.raises(
        SampleError, match=r"'tiny' split 'train' index 0: mask labels \[2\] are outside \[0, 2\)"
    ):
        ds[0]
    assert SegDataset(two_rows, pipeline=None, num_classes=3)[0]  # 255 is ignore_index: fine
    with pytest.raises(SampleError, match=r"labels \[255\]"):
        SegDataset(two_rows, pipeline=None, num_classes=3, ignore_index=254)[0]


def test_corrupt_image_bytes_name_the_sample_and_column():
    good = io.BytesIO()
    Image.fromarray(LABELS).save(good, format="PNG")
    rows = tiny(
        [rgb(), {"bytes": b"definitely not an image", "path": None}],
        [{"bytes": good.getvalue(), "path": None}] * 2,
    )
    ds = SegDataset(rows, pipeline=None, split="train", name="tiny")
    ds[0]
    with pytest.raises(
        SampleError, match=r"'tiny' split 'train' index 1: .*column 'image' cannot be decoded"
    ):
        ds[1]


def test_multi_channel_mask_is_an_error():
    ds = SegDataset(tiny([rgb()], [rgb()]), pipeline=None, split="val")
    with pytest.raises(SampleError, match=r"index 0: mask .*3 channel"):
        ds[0]


def test_img_path_comes_from_the_image_feature():
    png = io.BytesIO()
    rgb().save(png, format="PNG")
    rows = tiny([{"bytes": png.getvalue(), "path": "scenes/a.png"}], [Image.fromarray(LABELS)])
    assert SegDataset(rows, pipeline=None)[0]["data_samples"].img_path == "scenes/a.png"


def test_build_hf_dataset_sources(tmp_path, two_rows):
    synthetic = {"num_train": 3, "num_val": 2, "image_size": [16, 24], "cache_dir": str(tmp_path / "cache")}
    cfg = {"path": "segaccel/synthetic", "synthetic": synthetic}
    assert len(build_hf_dataset(cfg, "train")) == 3
    assert len(build_hf_dataset(cfg, "val")) == 2  # alias of validation
    with pytest.raises(ConfigError, match="no split 'test'.*'train', 'validation'"):
        build_hf_dataset(cfg, "test")

    datasets.DatasetDict({"train": two_rows}).save_to_disk(str(tmp_path / "saved"))
    assert len(build_hf_dataset({"path": str(tmp_path / "saved"), "validation_split": 0}, "train")) == 2

    two_rows.to_parquet(str(tmp_path / "rows.parquet"))
    parquet_cfg = {
        "path": "parquet",
        "data_files": {"validation": str(tmp_path / "rows.parquet")},
        "cache_dir": str(tmp_path / "hf-cache"),
        # ours: never given to load_dataset (the parquet builder would reject them)
        "image_column": "image",
        "label_column": "label",
        "reduce_zero_label": False,
        "label_map": {1: 2},
        "ignore_index": 255,
        "id2label": {0: "a"},
        "pipeline": [],
        "palette": [[0, 0, 0]],
    }
    loaded = build_hf_dataset(parquet_cfg, "validation")
    assert len(loaded) == 2 and loaded.column_names == ["image", "label"]
    with pytest.raises(ConfigError, match="dataset.path"):
        build_hf_dataset({}, "train")


def test_dataset_id2label():
    assert dataset_id2label({"path": "x", "id2label": {"0": "sky", "1": "road"}}) == {0: "sky", 1: "road"}
    assert dataset_id2label({"path": "x", "id2label": ["sky", "road"]}) == {0: "sky", 1: "road"}
    assert dataset_id2label({"path": "segaccel/synthetic"})[3] == "triangle"
    assert dataset_id2label({"path": "x"}) is None


def test_build_dataset_from_a_config(tmp_path):
    cfg = {
        "path": "segaccel/synthetic",
        "synthetic": {"num_train": 4, "num_val": 2, "image_size": [24, 40], "cache_dir": str(tmp_path)},
        "pipeline": [
            {"type": "RandomResize", "scale": [80, 48], "ratio_range": [0.5, 2.0]},
            {"type": "RandomCrop", "crop_size": [16, 16], "cat_max_ratio": 0.75},
            {"type": "RandomFlip", "prob": 0.5},
            {"type": "PackSegInputs"},
        ],
    }
    ds = build_dataset(cfg, "train", seed=1, num_classes=4)
    assert len(ds) == 4 and ds.split == "train" and ds.id2label[1] == "circle"
    out = ds[(2, 3)]
    assert out["inputs"].shape == (3, 16, 16)
    meta = out["data_samples"].metainfo
    assert meta["img_id"] == "train/3" and meta["ori_shape"] == (24, 40) and meta["img_shape"] == (16, 16)
    assert set(np.unique(gt_of(out)).tolist()) <= {0, 1, 2, 3}
    val = build_dataset({**cfg, "pipeline": [{"type": "PackSegInputs"}]}, "validation")
    assert val[0]["inputs"].shape == (3, 24, 40) and val[0]["data_samples"].img_id == "validation/0"


def test_test_pipeline_resizes_the_image_but_not_the_labels(two_rows):
    test_pipeline = [
        {"type": "Resize", "scale": [8, 6]},
        {"type": "LoadAnnotations"},
        {"type": "PackSegInputs"},
    ]
    out = SegDataset(two_rows, pipeline=test_pipeline)[0]
    assert out["inputs"].shape == (3, 6, 8) and out["data_samples"].img_shape == (6, 8)
    assert out["data_samples"].ori_shape == (3, 4) and np.array_equal(gt_of(out), LABELS)
    train_pipeline = [{"type": "Resize", "scale": [8, 6]}, {"type": "PackSegInputs"}]
    assert gt_of(SegDataset(two_rows, pipeline=train_pipeline)[0]).shape == (6, 8)
