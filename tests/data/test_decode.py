"""One image decoder, one orientation policy: images upright by their EXIF tag, masks as stored."""

import io

import cv2
import datasets
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from segaccel.data import SampleError, SegDataset, build_dataset
from segaccel.data.decode import DecodeError, decode_image, decode_mask, orient
from segaccel.inference import inference_model
from segaccel.models import Segmentor

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth (H, W, 3) uint8 picture (JPEG keeps it close), different in every corner."""
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = np.stack([yy * 200 // h, xx * 200 // w, (yy + xx) * 100 // (h + w)], -1)
    return (smooth + np.random.default_rng(seed).integers(0, 30, (h, w, 3))).astype(np.uint8)


def encode(array: np.ndarray, fmt: str, orientation: int | None = None, **options) -> bytes:
    buf = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    Image.fromarray(array).save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_is_pils_exif_transpose(orientation):
    stored = photo(5, 7)
    pil = Image.open(io.BytesIO(encode(stored, "PNG", orientation)))
    expected = np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))
    assert np.array_equal(orient(stored, orientation), expected)
    assert orient(stored, orientation).flags.c_contiguous


@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_exif_turned_jpeg_is_upright_as_mmsegmentation_and_datasets_read_it(orientation):
    data = encode(photo(24, 40), "JPEG", orientation, quality=95)
    pixels, path, applied = decode_image({"bytes": data, "path": "turned.jpg"})
    assert (path, applied) == ("turned.jpg", orientation)
    assert pixels.shape == ((40, 24, 3) if orientation >= 5 else (24, 40, 3))
    # MMSegmentation's LoadImageFromFile: cv2.imdecode(IMREAD_COLOR) applies the tag (BGR order)
    mmseg = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert np.array_equal(pixels, mmseg)
    # datasets' Image feature: Pillow, exif_transpose
    feature = datasets.Image().decode_example({"bytes": data, "path": None})
    assert np.array_equal(pixels, np.asarray(feature.convert("RGB")))


@pytest.mark.parametrize("orientation", [3, 6])
def test_a_png_eXIf_chunk_turns_the_image_too(orientation):
    data = encode(photo(24, 40), "PNG", orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(decode_image(data).pixels, expected)


@pytest.mark.parametrize(
    "array, fmt, options",
    [
        (photo(33, 50), "JPEG", {"quality": 90}),  # 4:2:0 chroma
        (photo(33, 50), "JPEG", {"quality": 95, "subsampling": 0}),  # 4:4:4
        (photo(33, 50)[..., 0], "JPEG", {}),  # grayscale JPEG
        (photo(33, 50), "PNG", {}),
        (np.dstack([photo(33, 50), np.full((33, 50), 7, np.uint8)]), "PNG", {}),  # RGBA: alpha dropped
        (photo(33, 50)[..., 1], "PNG", {}),
        (photo(33, 50), "BMP", {}),  # Pillow's path
    ],
)
def test_opencv_decodes_the_same_pixels_as_pillow(array, fmt, options):
    data = encode(array, fmt, **options)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(decode_image(data).pixels, expected)


def test_masks_are_read_as_stored_never_turned():
    stored = (np.arange(5 * 7).reshape(5, 7) % 4).astype(np.uint8)
    tagged = encode(stored, "PNG", 6)  # a mask that carries an orientation tag stays as stored
    assert np.array_equal(decode_mask(tagged), stored)
    palette = Image.fromarray(stored, mode="L").convert("P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * 756)
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    assert np.array_equal(decode_mask(buf.getvalue()), stored)  # palette indices, never colours
    with pytest.raises(DecodeError, match=r"3 channel\(s\) \(mode RGB\)"):
        decode_mask(encode(photo(5, 7), "PNG"))


def test_truncated_and_junk_files_are_refused():
    data = encode(photo(120, 160), "JPEG")
    with pytest.raises(DecodeError, match="cannot be decoded as an image: OSError: image file is truncated"):
        decode_image(data[: len(data) * 3 // 4])
    with pytest.raises(DecodeError, match="cannot be decoded as an image"):
        decode_image(b"not an image")


# --- the three paths ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def turned_pair(tmp_path_factory) -> dict:
    """A 24x40 JPEG stored sideways with orientation 6, and its mask drawn on the upright 40x24 image."""
    root = tmp_path_factory.mktemp("exif")
    jpeg = encode(photo(24, 40), "JPEG", 6, quality=92)
    upright_mask = np.zeros((40, 24), np.uint8)
    upright_mask[:10] = 1  # the top of the upright picture
    upright_mask[:, :5] = 2
    (root / "photo.jpg").write_bytes(jpeg)
    rows = {
        "image": [{"bytes": jpeg, "path": "photo.jpg"}],
        "label": [{"bytes": encode(upright_mask, "PNG"), "path": None}],
    }
    datasets.Dataset.from_dict(rows, features=FEATURES).to_parquet(str(root / "train.parquet"))
    return {"root": root, "jpeg": jpeg, "mask": upright_mask}


def test_the_same_pixels_and_aligned_mask_on_every_path(turned_pair):
    root, mask = turned_pair["root"], turned_pair["mask"]
    upright = decode_image(turned_pair["jpeg"]).pixels
    assert upright.shape == (40, 24, 3)
    source = {"path": "parquet", "data_files": {"train": str(root / "train.parquet")}, "validation_split": 0}

    map_style = build_dataset(source, "train")[0]
    assert isinstance(build_dataset(source, "train"), SegDataset)
    assert np.array_equal(map_style["inputs"].permute(1, 2, 0).numpy(), upright)
    assert np.array_equal(map_style["data_samples"].gt_sem_seg.data[0].numpy(), mask)
    assert map_style["data_samples"].ori_shape == (40, 24)

    streamed = next(iter(build_dataset({**source, "streaming": True}, "train")))
    assert np.array_equal(streamed["inputs"].numpy(), map_style["inputs"].numpy())
    assert np.array_equal(streamed["data_samples"].gt_sem_seg.data.numpy(), mask[None])

    torch.manual_seed(0)
    model = Segmentor(
        backbone=dict(
            type="MixVisionTransformer", embed_dims=8, num_layers=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)
        ),
        decode_head=dict(type="SegformerHead", in_channels=[8, 8, 8, 8], channels=8, num_classes=3),
        test_pipeline=[dict(type="Resize", scale=(32, 48), keep_ratio=True)],
    )
    from_file = inference_model(model, root / "photo.jpg")
    from_pil = inference_model(model, Image.open(root / "photo.jpg"))
    from_pixels = inference_model(model, upright)
    assert from_file.ori_shape == from_pil.ori_shape == (40, 24)
    assert torch.equal(from_file.seg_logits.data, from_pixels.seg_logits.data)
    assert torch.equal(from_pil.seg_logits.data, from_pixels.seg_logits.data)


def test_a_mask_drawn_on_the_sideways_pixels_is_reported_with_the_orientation(turned_pair):
    sideways_mask = np.zeros((24, 40), np.uint8)
    rows = {
        "image": [{"bytes": turned_pair["jpeg"], "path": None}],
        "label": [{"bytes": encode(sideways_mask, "PNG"), "path": None}],
    }
    data = datasets.Dataset.from_dict(rows, features=FEATURES)
    ds = SegDataset(data, pipeline=None, name="exif", split="train")
    with pytest.raises(
        SampleError,
        match=r"index 0: image size \(h, w\) = \(40, 24\) but mask size = \(24, 40\).*EXIF orientation tag 6",
    ):
        ds[0]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP"])
def test_the_size_limit_is_read_from_the_header_on_every_decoder_path(fmt):
    from segaccel.limits import override

    data = encode(photo(24, 40), fmt)
    with override(max_image_pixels=24 * 40 - 1), pytest.raises(DecodeError, match=r"is 24x40 \(h x w\)"):
        decode_image(data)
    grey = encode(photo(24, 40)[..., 0], "PNG")
    with override(max_image_side=39), pytest.raises(DecodeError, match=r"is 24x40 \(h x w\)"):
        decode_mask(grey)
