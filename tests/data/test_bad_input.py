"""Bad input: each problem gets an error naming the dataset, the split, the index and the problem; modes
with a clear meaning are converted instead."""

import io

import datasets
import numpy as np
import pytest
from PIL import Image

from segaccel.data import SampleError, SegDataset, build_dataset

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
WHERE = r"dataset 'city' split 'train' index 1"


def encoded(image: Image.Image) -> dict:
    buf = io.BytesIO()
    image.save(buf, format="TIFF" if image.mode in ("CMYK", "I", "F") else "PNG")  # PNG cannot hold these
    return {"bytes": buf.getvalue(), "path": None}


def good_image(h: int = 4, w: int = 6) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


def good_mask(h: int = 4, w: int = 6) -> Image.Image:
    return Image.fromarray(np.arange(h * w, dtype=np.uint8).reshape(h, w) % 3)


def palette_image(colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("P", (6, 4), 0)
    image.putpalette([*colour] * 256)
    return image


def dataset_with(second_image, second_mask, **options) -> SegDataset:
    """Row 0 is fine; row 1 holds the case under test."""
    rows = {
        "image": [
            encoded(good_image()),
            second_image if isinstance(second_image, dict) else encoded(second_image),
        ],
        "label": [
            encoded(good_mask()),
            second_mask if isinstance(second_mask, dict) else encoded(second_mask),
        ],
    }
    data = datasets.Dataset.from_dict(rows, features=FEATURES)
    ds = SegDataset(data, pipeline=None, name="city", split="train", **options)
    ds[0]  # the good row passes
    return ds


def test_mask_size_differs_from_the_image():
    ds = dataset_with(good_image(4, 6), good_mask(4, 5))
    with pytest.raises(
        SampleError, match=WHERE + r": image size \(h, w\) = \(4, 6\) but mask size = \(4, 5\)"
    ):
        ds[1]


def test_labels_outside_the_classes_and_not_ignored():
    mask = np.zeros((4, 6), np.uint8)
    mask[0, :3] = [3, 7, 255]
    ds = dataset_with(good_image(), Image.fromarray(mask), num_classes=3)
    with pytest.raises(
        SampleError, match=WHERE + r": mask labels \[3, 7\] are outside \[0, 3\) and not ignore_index 255"
    ):
        ds[1]


@pytest.mark.parametrize("column", ["image", "label"])
def test_undecodable_image_or_mask(column):
    junk = {"bytes": b"\x89PNG but not really", "path": None}
    ds = dataset_with(junk if column == "image" else good_image(), junk if column == "label" else good_mask())
    with pytest.raises(SampleError, match=WHERE + rf": .*column '{column}' cannot be decoded"):
        ds[1]


@pytest.mark.parametrize(
    "image, expected",
    [
        (Image.fromarray(np.full((4, 6), 90, np.uint8)), [90, 90, 90]),  # grayscale (L): repeated
        (Image.new("RGBA", (6, 4), (10, 20, 30, 0)), [10, 20, 30]),  # RGBA: alpha dropped
        (Image.new("LA", (6, 4), (70, 128)), [70, 70, 70]),
        (Image.new("CMYK", (6, 4), (0, 255, 255, 0)), [255, 0, 0]),  # CMYK red
        (palette_image((1, 2, 3)), [1, 2, 3]),  # palette image: its colours
    ],
)
def test_image_modes_with_a_clear_meaning_are_converted_to_rgb(image, expected):
    ds = dataset_with(image, good_mask())
    out = ds[1]["inputs"]
    assert out.shape == (3, 4, 6) and out[:, 0, 0].tolist() == expected


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_bit_depth_images_are_refused(mode):
    image = Image.fromarray(np.full((4, 6), 1000, np.uint16)).convert(mode) if mode != "I;16" else None
    if mode == "I;16":
        image = Image.fromarray(np.full((4, 6), 1000, np.uint16))
    assert image.mode == mode
    ds = dataset_with(image, good_mask())
    with pytest.raises(SampleError, match=WHERE + rf": image in column 'image' has mode '{mode}'.*8-bit RGB"):
        ds[1]


def test_16_bit_masks_are_read_as_class_ids():
    mask = np.zeros((4, 6), np.uint16)
    mask[0, 0], mask[1, 1] = 300, 65535
    ds = dataset_with(good_image(), Image.fromarray(mask), label_map={65535: 255})
    gt = ds[1]["data_samples"].gt_sem_seg.data[0].numpy()
    assert gt[0, 0] == 300 and gt[1, 1] == 255
    strict = dataset_with(good_image(), Image.fromarray(mask), num_classes=256)
    with pytest.raises(SampleError, match=WHERE + r": mask labels \[300, 65535\] are outside \[0, 256\)"):
        strict[1]


def test_binary_masks_are_0_and_1():
    mask = Image.fromarray(np.eye(4, 6, dtype=bool))
    assert mask.mode == "1"
    gt = dataset_with(good_image(), mask)[1]["data_samples"].gt_sem_seg.data[0].numpy()
    assert np.array_equal(gt, np.eye(4, 6))


@pytest.mark.parametrize(
    "mask, problem",
    [
        (
            Image.new("RGB", (6, 4), (255, 0, 0)),
            r"3 channel\(s\) \(mode RGB\); a mask must be a single-channel",
        ),
        (Image.new("LA", (6, 4), (1, 255)), r"2 channel\(s\) \(mode LA\)"),
    ],
)
def test_colour_and_multichannel_masks_are_refused(mask, problem):
    ds = dataset_with(good_image(), mask)
    with pytest.raises(SampleError, match=WHERE + r": mask in column 'label' has " + problem):
        ds[1]


def test_float_masks_are_read_when_their_values_are_whole():
    whole = Image.fromarray(np.full((4, 6), 2.0, np.float32))
    assert dataset_with(good_image(), whole)[1]["data_samples"].gt_sem_seg.data.unique().tolist() == [2]
    ds = dataset_with(good_image(), Image.fromarray(np.full((4, 6), 1.5, np.float32)))
    with pytest.raises(
        SampleError, match=WHERE + r": mask .* integer class ids, got dtype float32 with fractional"
    ):
        ds[1]


def test_integer_arrays_and_float_arrays_in_the_label_column():
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Array2D((4, 6), "float32")})
    rows = {"image": [encoded(good_image())] * 2, "label": [np.ones((4, 6)), np.full((4, 6), 0.5)]}
    ds = SegDataset(
        datasets.Dataset.from_dict(rows, features=features), pipeline=None, name="city", split="train"
    )
    assert ds[0]["data_samples"].gt_sem_seg.data.unique().tolist() == [1]
    with pytest.raises(SampleError, match=r"index 1: mask in column 'label' must hold integer class ids"):
        ds[1]


def test_missing_columns_name_what_exists(tmp_path):
    data = datasets.Dataset.from_dict(
        {"image": [encoded(good_image())], "depth": [encoded(good_mask())]},
        features=datasets.Features({"image": datasets.Image(), "depth": datasets.Image()}),
    )
    with pytest.raises(
        SampleError,
        match=r"dataset 'city' split 'train': missing column\(s\) \['label'\]; the dataset has columns "
        r"\['image', 'depth'\]",
    ):
        SegDataset(data, pipeline=None, label_column="label", name="city", split="train")
    data.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(SampleError, match=r"split 'train': no label column found among \['image', 'depth'\]"):
        build_dataset({"path": str(tmp_path / "saved")}, "train")


def test_an_empty_label_in_a_row():
    rows = {"image": [encoded(good_image())] * 2, "label": [encoded(good_mask()), None]}
    ds = SegDataset(
        datasets.Dataset.from_dict(rows, features=FEATURES), pipeline=None, name="city", split="train"
    )
    with pytest.raises(SampleError, match=WHERE + r": column 'label' is empty \(None\)"):
        ds[1]


def test_the_uint8_label_path_maps_and_checks_like_the_numpy_formula():
    # ADE20K's convention: stored 0 = other (→ 255), 1..150 classes (→ 0..149), 255 stays ignored
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 151, (4, 6)).astype(np.uint8)
    stored[0, 0], stored[0, 1] = 0, 255
    expected = np.where((stored == 0) | (stored == 255), 255, stored.astype(np.int64) - 1)
    ds = dataset_with(good_image(), Image.fromarray(stored), reduce_zero_label=True, num_classes=150)
    gt = ds[1]["data_samples"].gt_sem_seg.data[0].numpy()
    assert np.array_equal(gt, expected)
    stored[3, 5] = 151  # becomes 150: outside the 150 classes
    ds = dataset_with(good_image(), Image.fromarray(stored), reduce_zero_label=True, num_classes=150)
    with pytest.raises(SampleError, match=WHERE + r": mask labels \[150\] are outside \[0, 150\)"):
        ds[1]
    stored = np.minimum(stored, 149)
    stored[0, 1], stored[2, 2] = 255, 200  # 200 lies between the classes and 255: a histogram tells
    ds = dataset_with(good_image(), Image.fromarray(stored), label_map={200: 3}, num_classes=150)
    assert ds[1]["data_samples"].gt_sem_seg.data[0, 2, 2] == 3
