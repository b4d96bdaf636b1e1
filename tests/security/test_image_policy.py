"""One image policy on every path: `inference_model` and the dataset reader accept and refuse the same
images (bit depth, mode, size), each naming the image or the sample.

The report's cases: a 16-bit grey image went through `inference_model` with 99.4 % of its pixels
clipped to 255 while the dataset reader refused it; a 12000² image (under Pillow's bomb limit) ended
in a MemoryError naming no sample. The oversize file here is a real PNG header declaring 12000x12000
with almost no pixel data: the size must be refused from the header, before any decoding.
"""

from __future__ import annotations

import io
import struct
import zlib

import datasets
import numpy as np
import pytest
from PIL import Image
from security_helpers import tiny_segformer

from segaccel import inference_model
from segaccel.data.rows import SampleError
from segaccel.data.seg_dataset import SegDataset
from segaccel.limits import override

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})


def encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG declaring width x height 8-bit grey pixels, with a few bytes of (truncated) data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = chunk(b"IDAT", zlib.compress(b"\0" * 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + data + chunk(b"IEND", b"")


GREY16 = encode(Image.fromarray((np.arange(24 * 40).reshape(24, 40) * 60).astype(np.uint16)))
RGB8 = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 40, 3), np.uint8)))
PALETTE = encode(Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) % 4, (24, 1)), mode="L").convert("P"))
HUGE = png_header(12000, 12000)
# bytes -> None (accepted) or what both paths must say
FILES = {
    "8-bit RGB": (RGB8, None),
    "palette": (PALETTE, None),
    "16-bit grey": (GREY16, r"has mode 'I;16' \(more than 8 bits per channel\); convert it to 8-bit RGB"),
    "12000x12000": (
        HUGE,
        r"is 12000x12000 \(h x w\) = 144000000 pixels, over the limit of 67108864; set SEGACCEL_MAX_IMAGE",
    ),
}


def dataset_of(image: bytes, mask: bytes) -> SegDataset:
    rows = {"image": [{"bytes": image, "path": "img.png"}], "label": [{"bytes": mask, "path": None}]}
    table = datasets.Dataset.from_dict(rows, features=FEATURES)
    return SegDataset(table, pipeline=None, name="d", split="val")


def reader_result(data: bytes) -> dict:
    return dataset_of(data, encode(Image.new("L", (40, 24)))).load_results(0)


@pytest.mark.parametrize("name", list(FILES))
def test_inference_model_and_the_dataset_reader_decide_alike(name, tmp_path):
    data, refusal = FILES[name]
    path = tmp_path / "img.png"
    path.write_bytes(data)
    model = tiny_segformer()
    if refusal is None:
        assert inference_model(model, str(path)).pred_sem_seg.shape == (24, 40)
        assert reader_result(data)["img"].shape == (24, 40, 3)
        return
    with pytest.raises(ValueError, match=rf"images\[0\] \({path}\): the image {refusal}"):
        inference_model(model, str(path))
    where = r"dataset 'd' split 'val' index 0: image in column 'image' "
    with pytest.raises(SampleError, match=where + refusal):
        reader_result(data)


def test_a_16_bit_pil_image_is_refused_not_clipped():
    image = Image.open(io.BytesIO(GREY16))
    assert image.mode == "I;16" and np.asarray(image).max() > 255  # what clipping would destroy
    with pytest.raises(ValueError, match=r"images\[0\]: the image has mode 'I;16'"):
        inference_model(tiny_segformer(), image)


def test_arrays_and_pil_images_handed_in_meet_the_same_size_limit():
    model = tiny_segformer(test_pipeline=None)  # images reach the model at their own size
    array = np.zeros((24, 40, 3), np.uint8)
    with override(max_image_pixels=24 * 40 - 1):
        with pytest.raises(ValueError, match=r"images\[0\]: the image is 24x40 \(h x w\) = 960 pixels"):
            inference_model(model, array)
        with pytest.raises(ValueError, match=r"images\[1\]: the image is 24x40"):
            inference_model(model, [np.zeros((8, 8, 3), np.uint8), Image.fromarray(array)])
        with pytest.raises(SampleError, match=r"index 0: image in column 'image' is 24x40"):
            reader_result(RGB8)
    assert inference_model(model, array).pred_sem_seg.shape == (24, 40)  # under the default limits


def test_an_oversized_mask_names_its_sample():
    with pytest.raises(SampleError, match=r"index 0: mask in column 'label' is 12000x12000"):
        dataset_of(RGB8, HUGE).load_results(0)
