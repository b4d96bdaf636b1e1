"""The dataset recipes in configs/_base_/datasets/, each read from a few generated samples laid out the way
that source is laid out in parquet (column names, label encoding, split names)."""

import io
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from segaccel.config import load_config
from segaccel.data import build_dataset

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "configs" / "_base_" / "datasets"
VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [64] * (256 * 3 - 15)


def encode(array: np.ndarray, fmt: str, palette: list[int] | None = None) -> dict:
    image = Image.fromarray(array)
    if palette is not None:
        image = image.convert("P") if image.mode != "P" else image
        image.putpalette(palette)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return {"bytes": buf.getvalue(), "path": None}


def raw_mask(values: list[int], seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    """An (h, w) mask of vertical bands drawn from `values` (every value appears)."""
    g = np.random.default_rng(seed)
    bands = np.array(values)[g.permutation(len(values))]
    return np.repeat(bands, -(-w // len(values)))[:w][None].repeat(h, axis=0).astype(np.uint8)


def write_split(path: Path, image_column: str, label_column: str, masks: list[np.ndarray], extra=None, **fmt):
    g = np.random.default_rng(len(masks))
    rows = {
        image_column: [encode(g.integers(0, 256, (*m.shape, 3), dtype=np.uint8), "JPEG") for m in masks],
        label_column: [encode(m, "PNG", fmt.get("palette")) for m in masks],
        **(extra or {}),
    }
    features = {image_column: datasets.Image(), label_column: datasets.Image()}
    if extra:
        features.update({k: datasets.Value("int64") for k in extra})
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=datasets.Features(features)).to_parquet(str(path))


def recipe(name: str, path: Path) -> dict:
    """The recipe with its source pointed at the local copy in `path` (everything else as written)."""
    keys = ("train_dataloader", "val_dataloader", "test_dataloader")
    return load_config(RECIPES / f"{name}.yaml", [f"{k}.dataset.path={path}" for k in keys])


def build(cfg: dict, key: str, training: bool = False):
    dataset_cfg = dict(cfg[key]["dataset"])
    split = dataset_cfg.pop("split")
    num_classes = len(dataset_cfg["id2label"])
    return build_dataset(dataset_cfg, split, seed=0, num_classes=num_classes, training=training)


def check_recipe(
    cfg: dict, raw_val: list[np.ndarray], expected_val: list[np.ndarray], num_classes: int
) -> None:
    """Class list, palette, pipelines; validation labels mapped as expected; training crops in range."""
    train_cfg = cfg["train_dataloader"]["dataset"]
    assert len(train_cfg["id2label"]) == len(train_cfg["palette"]) == num_classes
    assert cfg["val_evaluator"] == {"type": "IoUMetric", "iou_metrics": ["mIoU"]}
    types = [t["type"] for t in train_cfg["pipeline"]]
    assert types == ["RandomResize", "RandomCrop", "RandomFlip", "PhotoMetricDistortion", "PackSegInputs"]
    crop = train_cfg["pipeline"][1]
    assert crop["crop_size"] == cfg["crop_size"] and crop["cat_max_ratio"] == 0.75
    assert train_cfg["pipeline"][0]["ratio_range"] == [0.5, 2.0] and train_cfg["pipeline"][0]["keep_ratio"]
    test_types = [t["type"] for t in cfg["test_dataloader"]["dataset"]["pipeline"]]
    assert test_types == ["Resize", "LoadAnnotations", "PackSegInputs"]

    val = build(cfg, "val_dataloader")
    assert len(val) == len(raw_val)
    for i, expected in enumerate(expected_val):
        out = val[i]
        gt = out["data_samples"].gt_sem_seg.data[0].numpy()
        assert np.array_equal(gt, expected), f"validation sample {i}: labels not mapped as the source needs"
        assert out["data_samples"].ori_shape == expected.shape  # labels at the original size
    test = build(cfg, "test_dataloader")
    assert np.array_equal(test[0]["data_samples"].gt_sem_seg.data[0].numpy(), expected_val[0])

    train = build(cfg, "train_dataloader", training=True)
    out = train[(0, 0)]
    h, w = out["inputs"].shape[1:]
    assert h <= cfg["crop_size"][0] and w <= cfg["crop_size"][1] and max(h, w) > 100  # resized up, cropped
    labels = set(np.unique(out["data_samples"].gt_sem_seg.data.numpy()).tolist())
    assert labels <= set(range(num_classes)) | {255}


def test_ade20k_scene_parse_150(tmp_path):
    # refs/convert/parquet of zhoubolei/scene_parse_150, config scene_parsing:
    # columns image, annotation, scene_category
    raw = [raw_mask([0, 1, 7, 150], seed=i) for i in range(2)]
    for split in ("train", "validation"):
        write_split(
            tmp_path / "scene_parsing" / split / "0000.parquet",
            "image",
            "annotation",
            raw,
            extra={"scene_category": [3, 5]},
        )
    cfg = recipe("ade20k", tmp_path)
    names = cfg["train_dataloader"]["dataset"]["id2label"]
    assert (names[0], names[7], names[149]) == ("wall", "bed ", "flag")
    expected = [np.where(m == 0, 255, m.astype(int) - 1) for m in raw]  # reduce_zero_label
    check_recipe(cfg, raw, expected, 150)


CITYSCAPES_ID_TO_TRAIN = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}


def test_cityscapes_label_ids_to_train_ids(tmp_path):
    raw = [raw_mask(list(range(34)), seed=i, w=68) for i in range(2)]
    for split in ("train", "validation"):
        write_split(tmp_path / "data" / f"{split}-00000-of-00001.parquet", "image", "label", raw)
    cfg = recipe("cityscapes", tmp_path)
    assert cfg["crop_size"] == [512, 1024] and cfg["train_dataloader"]["dataset"]["pipeline"][0]["scale"] == [
        2048,
        1024,
    ]
    lut = np.full(256, 255)
    for k, v in CITYSCAPES_ID_TO_TRAIN.items():
        lut[k] = v
    check_recipe(cfg, raw, [lut[m] for m in raw], 19)


def test_pascal_voc12_palette_masks_and_the_aug_split(tmp_path):
    raw = [raw_mask([0, 1, 15, 20, 255], seed=i) for i in range(2)]
    for split in ("train", "validation"):
        write_split(
            tmp_path / "data" / f"{split}-00000-of-00001.parquet", "image", "label", raw, palette=VOC_PALETTE
        )
    aug = [raw_mask([0, 3, 255], seed=9)]
    write_split(tmp_path / "data" / "train_aug-00000-of-00001.parquet", "image", "label", aug * 3)
    cfg = recipe("pascal_voc12", tmp_path)
    assert cfg["train_dataloader"]["dataset"]["id2label"][15] == "person"
    check_recipe(cfg, raw, raw, 21)  # palette indices are the labels, read as stored
    aug_cfg = recipe("pascal_voc12_aug", tmp_path)
    train_aug = build(aug_cfg, "train_dataloader")
    assert train_aug.split == "train_aug" and len(train_aug) == 3
    assert len(build(cfg, "train_dataloader")) == 2  # VOC2012 train alone: the aug files are not mixed in


def test_coco_stuff164k_raw_ids_to_171_train_ids(tmp_path):
    raw = [raw_mask([0, 10, 12, 90, 91, 181, 255], seed=i, w=35) for i in range(2)]
    for split in ("train", "validation"):
        write_split(tmp_path / "data" / f"{split}-00000-of-00001.parquet", "image", "label", raw)
    cfg = recipe("coco-stuff164k", tmp_path)
    names = cfg["train_dataloader"]["dataset"]["id2label"]
    assert (names[0], names[11], names[80], names[170]) == ("person", "stop sign", "banner", "wood")
    lut = np.arange(256)
    lut[[12, 90, 91, 181]] = [11, 255, 80, 170]  # raw 90 is one of the 11 unused COCO ids
    check_recipe(cfg, raw, [lut[m] for m in raw], 171)


def test_pascal_context_59_background_ignored(tmp_path):
    raw = [raw_mask([0, 1, 30, 59], seed=i) for i in range(2)]
    for split in ("train", "validation"):
        write_split(tmp_path / "data" / f"{split}-00000-of-00001.parquet", "image", "label", raw)
    cfg = recipe("pascal_context_59", tmp_path)
    assert cfg["crop_size"] == [480, 480] and cfg["train_dataloader"]["dataset"]["pipeline"][0]["scale"] == [
        520,
        520,
    ]
    assert cfg["train_dataloader"]["dataset"]["id2label"][0] == "aeroplane"
    check_recipe(cfg, raw, [np.where(m == 0, 255, m.astype(int) - 1) for m in raw], 59)


def test_sidewalk_semantic_train_only_with_a_held_out_validation(tmp_path):
    raw = [raw_mask([0, 1, 2, 34], seed=i) for i in range(10)]
    write_split(tmp_path / "data" / "train-00000-of-00001.parquet", "pixel_values", "label", raw)
    cfg = recipe("sidewalk", tmp_path)
    names = cfg["train_dataloader"]["dataset"]["id2label"]
    assert (names[0], names[33]) == ("flat-road", "void-unclear")
    train, val = build(cfg, "train_dataloader"), build(cfg, "val_dataloader")
    assert (len(train), len(val)) == (9, 1)  # 10 % held out, seeded
    gt = val[0]["data_samples"].gt_sem_seg.data[0].numpy()
    assert set(np.unique(gt).tolist()) == {255, 0, 1, 33}  # 0 (unlabeled) ignored, 1..34 -> 0..33
    check_recipe({**cfg}, [None], [gt], 34)


@pytest.mark.parametrize(
    "name",
    [
        "ade20k",
        "cityscapes",
        "pascal_voc12",
        "pascal_voc12_aug",
        "coco-stuff164k",
        "pascal_context_59",
        "sidewalk",
    ],
)
def test_recipe_files_exist_and_load(name):
    cfg = load_config(RECIPES / f"{name}.yaml")
    assert {
        "train_dataloader",
        "val_dataloader",
        "test_dataloader",
        "val_evaluator",
        "test_evaluator",
    } <= set(cfg)
    assert cfg["val_dataloader"]["dataset"]["split"] == "validation"
