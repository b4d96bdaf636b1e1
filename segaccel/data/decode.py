"""The one image decoder: every path (map-style, streamed, `inference_model`) reads images through it.

Orientation policy (as MMSegmentation, whose `LoadImageFromFile` decodes with `cv2.imdecode` and
whose `LoadAnnotations` reads label maps with Pillow, unchanged):

- **images** are turned upright by their EXIF orientation tag (JPEG, PNG `eXIf` before the image
  data, TIFF, WebP, and PIL images that still carry the tag), exactly as `PIL.ImageOps.exif_transpose`
  does and as `datasets`' `Image` feature, `cv2.imdecode(IMREAD_COLOR)` and every image viewer do;
- **label maps** are read as stored, never turned: a mask is drawn on the upright image, and
  MMSegmentation reads it with `flag='unchanged'`, which ignores the tag.

So a photo with an orientation tag and its mask line up as a viewer shows them. A mask drawn on the
stored (not upright) pixels of a turned photo shows as a size mismatch for a quarter turn of a
non-square image, which the row reader reports naming the orientation.

Size policy: an image or mask larger than `max_image_side` or `max_image_pixels` (`segaccel.limits`,
default 8192² pixels) is refused from its header, before its pixels are decoded, with the size and the
limit; 16-bit, 32-bit and float images are refused (the scaling to 8 bits is not known here). The same
checks apply to PIL images and arrays handed in directly, so the dataset reader and `inference_model`
accept and refuse the same files.

Same bytes give the same pixels on every path: grey and colour JPEG and 8-bit grey/RGB/RGBA PNG
images are decoded by OpenCV, their size and orientation read from the header bytes (faster than
Pillow; the same libjpeg-turbo and libpng pixels, checked in tests/data), every other format and
mode by Pillow; 8-bit grey PNG masks by OpenCV, other masks by Pillow (OpenCV would turn palette
indices into colours).
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any, NamedTuple

import cv2
import numpy as np
import PIL.Image
import PIL.ImageOps

from segaccel.limits import check_image_size

# Image modes converted to RGB (their meaning is clear); other modes (16-bit, 32-bit, float) are refused.
RGB_CONVERTIBLE_MODES = (
    "RGB",
    "RGBA",
    "RGBX",
    "RGBa",
    "L",
    "LA",
    "La",
    "P",
    "PA",
    "1",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
)
# Mask modes read as class ids as stored (palette indices are labels).
LABEL_MODES = ("L", "P", "1", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")

EXIF_ORIENTATION = 0x0112


class DecodeError(ValueError):
    """Bytes, a file or a value that cannot be read as an image or a label map (the message says why)."""


class DecodedImage(NamedTuple):
    """An image as the pipeline gets it: `pixels` RGB uint8 (H, W, 3), upright."""

    pixels: np.ndarray
    path: str | None  # the file it came from, when known
    orientation: int  # the EXIF orientation that was applied (1: none)


def orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """`img` (H, W, ...) turned upright for EXIF `orientation` 1..8, as `PIL.ImageOps.exif_transpose`.

    2 mirrors left-right, 3 turns 180°, 4 mirrors top-bottom, 5 transposes, 6 turns 90° clockwise,
    7 transverses, 8 turns 90° counter-clockwise; anything else leaves the image as it is. The result
    is C-contiguous (one copy when turned).
    """
    if orientation == 2:
        img = img[:, ::-1]
    elif orientation == 3:
        img = img[::-1, ::-1]
    elif orientation == 4:
        img = img[::-1]
    elif orientation == 5:
        img = img.swapaxes(0, 1)
    elif orientation == 6:
        img = img.swapaxes(0, 1)[:, ::-1]
    elif orientation == 7:
        img = img.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        img = img.swapaxes(0, 1)[::-1]
    else:
        return img
    return np.ascontiguousarray(img)


def read_source(value: Any) -> tuple[bytes, str | None]:
    """The encoded bytes and file path of `value`: bytes, a path, or a `datasets` Image dict {bytes, path}.

    Remote paths (`hf://...`, `zip://...::...`, URLs) are opened with `datasets`' `xopen`, as the
    `Image` feature does.
    """
    path = None
    if isinstance(value, dict):
        path = value.get("path")
        if value.get("bytes") is not None:
            return bytes(value["bytes"]), path
        value = path
        if value is None:
            raise DecodeError("holds neither bytes nor a path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), path
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        try:
            if os.path.exists(path) or "://" not in path:
                with open(path, "rb") as f:
                    return f.read(), path
            from datasets.utils.file_utils import xopen

            with xopen(path, "rb") as f:
                return f.read(), path
        except OSError as exc:
            raise DecodeError(f"cannot be read from {path!r}: {type(exc).__name__}: {exc}") from exc
    raise DecodeError(f"expected image bytes, a path or an {{bytes, path}} dict, got {type(value).__name__}")


def _open(data: bytes) -> PIL.Image.Image:
    """Pillow's lazy view of `data` (only the header is parsed); its size checked against the limits."""
    try:
        with warnings.catch_warnings():  # the size is checked here against segaccel's own limits
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(io.BytesIO(data))
    except Exception as exc:
        raise DecodeError(f"cannot be decoded as an image: {type(exc).__name__}: {exc}") from exc
    check_size(image.height, image.width)
    return image


def check_size(height: int, width: int) -> None:
    """DecodeError when an image of this size is over `max_image_side` or `max_image_pixels`."""
    try:
        check_image_size(height, width, "image")
    except ValueError as exc:
        raise DecodeError(str(exc).removeprefix("image ")) from None


def _load(image: PIL.Image.Image) -> PIL.Image.Image:
    try:
        image.load()
    except Exception as exc:
        raise DecodeError(f"cannot be decoded as an image: {type(exc).__name__}: {exc}") from exc
    return image


def _orientation(image: PIL.Image.Image) -> int:
    """The EXIF orientation tag of a loaded PIL image (1 when there is none)."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a malformed EXIF block: the pixels are still usable, as stored
        return 1


_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}


def _cv2_decode(data: bytes, image_format: str, flags: int) -> np.ndarray | None:
    """OpenCV's decode of a complete JPEG/PNG file; None for a file that does not end with its end marker.

    (A truncated file is left to Pillow, which reports it; some OpenCV versions fill in the missing rows.)
    """
    if not data.endswith(_END_MARKERS[image_format]):
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


def _unsupported_image_mode(mode: str) -> DecodeError:
    return DecodeError(
        f"has mode {mode!r} (more than 8 bits per channel); convert it to 8-bit RGB first, the scaling to "
        "use is not known here"
    )


def pil_to_rgb(image: PIL.Image.Image) -> tuple[np.ndarray, int]:
    """A PIL image as upright RGB uint8 (H, W, 3), and the EXIF orientation applied; its mode converted."""
    if image.mode not in RGB_CONVERTIBLE_MODES:
        raise _unsupported_image_mode(image.mode)
    _load(image)
    orientation = _orientation(image)
    if orientation != 1:
        image = PIL.ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image), orientation


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """A uint8 (H, W[, 1 | 3 | 4]) array as RGB (H, W, 3): grey repeated, alpha dropped."""
    channels = array.shape[2] if array.ndim == 3 else 1
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or channels not in (1, 3, 4):
        raise DecodeError(
            f"must hold images (encoded bytes, PIL images or uint8 (H, W[, C]) arrays), got an array with "
            f"dtype {array.dtype} and shape {array.shape}"
        )
    if array.ndim == 2 or array.shape[2] == 1:
        return np.repeat(array.reshape(array.shape[0], array.shape[1], 1), 3, axis=2)
    return array[..., :3] if array.shape[2] == 4 else array


def _exif_orientation(tiff: bytes) -> int:
    """The orientation tag (0x0112) of IFD0 in an EXIF block's TIFF data; 1 when absent or unreadable."""
    try:
        order = {b"II": "little", b"MM": "big"}[tiff[:2]]
        ifd = int.from_bytes(tiff[4:8], order)
        for k in range(int.from_bytes(tiff[ifd : ifd + 2], order)):
            entry = ifd + 2 + 12 * k
            if int.from_bytes(tiff[entry : entry + 2], order) == EXIF_ORIENTATION:
                value = int.from_bytes(tiff[entry + 8 : entry + 10], order)
                return value if 1 <= value <= 8 else 1
    except (KeyError, IndexError, ValueError):
        pass
    return 1


def jpeg_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(height, width, components, EXIF orientation) of a JPEG from its markers; None if not a plain JPEG.

    Reads only the markers before the first scan (a few hundred bytes), instead of opening the file
    with Pillow, so that OpenCV decodes it straight away.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    orientation, i, n = 1, 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\x00\x00" and orientation == 1:
            orientation = _exif_orientation(data[i + 10 : i + 2 + length])
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 10 <= n:
            height, width = (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8]
            return (height, width, data[i + 9], orientation) if height and width else None
        elif marker == 0xDA:  # a scan before any frame header
            return None
        i += 2 + length
    return None


def png_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(height, width, bit depth, colour type) from a PNG's IHDR; None if not a PNG."""
    if not (data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 26):
        return None
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big"), data[24], data[25]


def _png_orientation(data: bytes) -> int:
    """The EXIF orientation of a PNG's `eXIf` chunk before its image data (where the PNG spec puts it)."""
    i = 8
    while i + 8 <= len(data):
        length, kind = int.from_bytes(data[i : i + 4], "big"), data[i + 4 : i + 8]
        if kind == b"eXIf":
            return _exif_orientation(data[i + 8 : i + 8 + length])
        if kind in (b"IDAT", b"IEND"):
            return 1
        i += 12 + length
    return 1


def decode_image(value: Any) -> DecodedImage:
    """An image as upright RGB uint8 (H, W, 3), with its file path when known and the orientation applied.

    `value`: encoded bytes, a file path, a `datasets` Image dict {bytes, path}, a PIL image or a uint8
    array (arrays are taken as RGB, as they are). Raises `DecodeError` (a message to prefix with
    where the image comes from) for anything else, undecodable data, or 16-bit/float images.

    JPEG (grey or colour) and 8-bit grey/RGB/RGBA PNG files are decoded by OpenCV after reading their
    size and orientation from the header bytes; everything else is opened by Pillow.
    """
    if isinstance(value, PIL.Image.Image):
        check_size(value.height, value.width)
        pixels, orientation = pil_to_rgb(value)
        return DecodedImage(pixels, getattr(value, "filename", None) or None, orientation)
    if isinstance(value, (np.ndarray, list, tuple)):
        array = np.asarray(value)
        if array.ndim >= 2:
            check_size(array.shape[0], array.shape[1])
        return DecodedImage(array_to_rgb(array), None, 1)
    data, path = read_source(value)
    fast = None
    jpeg = jpeg_header(data)
    if jpeg is not None and jpeg[2] in (1, 3):
        fast = ("JPEG", jpeg[0], jpeg[1], jpeg[3])
    else:
        png = png_header(data)
        if png is not None and png[2] == 8 and png[3] in (0, 2, 6):  # 8-bit grey, RGB, RGBA
            fast = ("PNG", png[0], png[1], None)
    if fast is not None:
        image_format, height, width, orientation = fast
        check_size(height, width)
        img = _cv2_decode(data, image_format, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
        if img is not None:
            orientation = _png_orientation(data) if orientation is None else orientation
            return DecodedImage(orient(img, orientation), path, orientation)
    # Pillow for every other format and mode; its decoder also names what is wrong with a broken file
    image = _open(data)
    if image.mode not in RGB_CONVERTIBLE_MODES:
        raise _unsupported_image_mode(image.mode)
    pixels, orientation = pil_to_rgb(image)
    return DecodedImage(pixels, path, orientation)


def decode_mask(value: Any) -> np.ndarray:
    """A label map as stored (H, W): palette indices are labels, no colour conversion, no orientation.

    `value` as for `decode_image`; arrays are returned as they are (the row reader checks them). PIL
    modes other than `LABEL_MODES` (colour, multi-channel) raise `DecodeError`.
    """
    if isinstance(value, (np.ndarray, list, tuple)):
        array = np.asarray(value)
        if array.ndim >= 2:
            check_size(array.shape[0], array.shape[1])
        return array
    if isinstance(value, PIL.Image.Image):
        image = value
        check_size(image.height, image.width)
    else:
        data, _ = read_source(value)
        png = png_header(data)
        if png is not None and png[2] == 8 and png[3] == 0:  # 8-bit grey: OpenCV reads it as stored
            check_size(png[0], png[1])
            mask = _cv2_decode(data, "PNG", cv2.IMREAD_UNCHANGED)
            if mask is not None and mask.ndim == 2:
                return mask
        image = _open(data)
    if image.mode not in LABEL_MODES:
        raise DecodeError(
            f"has {len(image.getbands())} channel(s) (mode {image.mode}); a mask must be a single-channel "
            f"label image of class ids (modes {', '.join(LABEL_MODES)}), never colours"
        )
    return np.asarray(_load(image))
