"""A `RandomCrop` larger than every image, with nothing padding up to it, is refused at build time.

The check (`segaccel.data.crop_check.check_crop_size`) runs the transforms before the crop on a few
samples; the whole-run path through `Runner.train()` is in test_bad_configs.py.
"""

import io

import datasets
import numpy as np
import pytest
from PIL import Image

from segaccel.data import SegDataset
from segaccel.data.crop_check import check_crop_size
from segaccel.data.streaming import SegStreamDataset
from segaccel.registry import ConfigError

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
KEY = "train_dataloader.dataset"


def png(array: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def rows(sizes: list[tuple[int, int]]) -> datasets.Dataset:
    """One image per (h, w), with a mask of the same size."""
    images = [png(np.zeros((h, w, 3), np.uint8)) for h, w in sizes]
    masks = [png(np.ones((h, w), np.uint8)) for h, w in sizes]
    return datasets.Dataset.from_dict({"image": images, "label": masks}, features=FEATURES)


def dataset(sizes: list[tuple[int, int]], pipeline: list[dict]) -> SegDataset:
    return SegDataset(rows(sizes), pipeline=[*pipeline, {"type": "PackSegInputs"}], name="d", split="train")


SMALL = [(20, 30), (24, 28), (16, 40)]
CROP = {"type": "RandomCrop", "crop_size": [32, 32]}


def test_crop_larger_than_every_image_names_the_key_and_the_sizes():
    ds = dataset(SMALL, [{"type": "RandomFlip", "prob": 0.5}, CROP])
    with pytest.raises(ConfigError) as info:
        check_crop_size(ds, KEY)
    message = str(info.value)
    assert message.startswith(f"{KEY}.pipeline.1.crop_size: RandomCrop's crop_size (h, w) = (32, 32)")
    assert "(3 samples probed, (h x w) 20x30, 24x28, 16x40)" in message
    assert "model.data_preprocessor.size: [32, 32]" in message


def test_larger_in_one_dimension_only_is_refused_too():
    ds = dataset([(40, 20), (50, 30)], [{"type": "RandomCrop", "crop_size": [32, 32]}])
    with pytest.raises(ConfigError, match=r"pipeline\.0\.crop_size: .*40x20, 50x30"):
        check_crop_size(ds, KEY)


@pytest.mark.parametrize(
    "pipeline, pad_size",
    [
        ([CROP], [32, 32]),  # the preprocessor pads training batches to the crop
        ([CROP], 40),
        ([CROP, {"type": "Pad", "size": [32, 32]}], None),  # a Pad after the crop
        ([{"type": "Resize", "scale": [64, 64], "keep_ratio": False}, CROP], None),  # resized first
    ],
)
def test_padding_or_resizing_makes_it_fine(pipeline, pad_size):
    check_crop_size(dataset(SMALL, pipeline), KEY, pad_size)


def test_padding_smaller_than_the_crop_does_not_count():
    with pytest.raises(ConfigError, match=r"pipeline\.0\.crop_size"):
        check_crop_size(dataset(SMALL, [CROP, {"type": "Pad", "size": [32, 24]}]), KEY, pad_size=[24, 32])
    with pytest.raises(ConfigError, match=r"pipeline\.0\.crop_size"):
        check_crop_size(dataset(SMALL, [CROP, {"type": "Pad", "size_divisor": 32}]), KEY)


def test_one_image_as_large_as_the_crop_is_enough():
    check_crop_size(dataset([*SMALL, (32, 33)], [CROP]), KEY)


def test_probes_are_spread_over_the_dataset():
    # 8 of 100 images are probed, the first and the last among them
    sizes = [(16, 16)] * 100
    with pytest.raises(ConfigError, match=r"8 samples probed"):
        check_crop_size(dataset(sizes, [CROP]), KEY)
    check_crop_size(dataset([*sizes[:-1], (32, 32)], [CROP]), KEY)


def test_random_resize_before_the_crop_is_seeded_like_the_dataset():
    # ratio_range makes images between 0.5x and 0.6x of 64: never 32 wide, so the crop never fits
    resize = {"type": "RandomResize", "scale": [64, 64], "ratio_range": [0.3, 0.45], "keep_ratio": False}
    with pytest.raises(ConfigError, match=r"pipeline\.1\.crop_size"):
        check_crop_size(dataset(SMALL, [resize, CROP]), KEY)
    check_crop_size(dataset(SMALL, [{**resize, "ratio_range": [0.5, 0.6]}, CROP]), KEY)


def test_no_crop_and_unreadable_samples():
    check_crop_size(dataset(SMALL, [{"type": "RandomFlip", "prob": 0.5}]), KEY)  # nothing to check
    broken = rows(SMALL).to_dict()
    broken["image"][0] = {"bytes": b"not an image", "path": None}
    ds = SegDataset(
        datasets.Dataset.from_dict(broken, features=FEATURES), pipeline=[CROP], name="d", split="train"
    )
    with pytest.raises(ConfigError, match=r"2 samples probed, \(h x w\) 24x28, 16x40\)"):
        check_crop_size(ds, KEY)


def test_a_stream_is_probed_from_its_first_samples():
    stream = rows(SMALL).to_iterable_dataset()
    ds = SegStreamDataset(stream, pipeline=[CROP], name="d", split="train")
    with pytest.raises(ConfigError, match=r"3 samples probed, \(h x w\) 20x30, 24x28, 16x40\)"):
        check_crop_size(ds, KEY)
    check_crop_size(SegStreamDataset(rows([(32, 32)]).to_iterable_dataset(), [CROP], name="d"), KEY)
