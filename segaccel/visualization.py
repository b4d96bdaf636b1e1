"""Palettes and overlays for looking at segmentation masks (Pillow and numpy only).

Masks are `(H, W)` integer class indices; pixels outside `[0, len(palette))` (255 = ignore) are
drawn black by `colorize_mask` and left untouched by `overlay_mask`.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Saturation/value levels, cycled every few hues so that neighbouring classes differ in more than hue.
_LEVELS = ((0.85, 0.95), (0.55, 0.85), (1.0, 0.65), (0.35, 1.0), (0.75, 0.5))
_GOLDEN = 0.6180339887498949


def get_palette(num_classes: int, seed: int = 0) -> list[list[int]]:
    """`num_classes` distinct RGB colours, the same for the same `seed`.

    Hues step by the golden ratio (neighbouring classes far apart); saturation and value cycle,
    and no colour is black, which stays reserved for ignored pixels.
    """
    if num_classes < 0:
        raise ValueError(f"get_palette: num_classes must be >= 0, got {num_classes}")
    offset = np.random.default_rng(seed).random()
    palette: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    i = 0
    while len(palette) < num_classes:
        saturation, value = _LEVELS[(i // 3) % len(_LEVELS)]
        hue = (offset + i * _GOLDEN) % 1.0
        colour = tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, saturation, value))
        i += 1
        if colour not in seen:  # quantisation to 8 bits could repeat a colour for huge palettes
            seen.add(colour)
            palette.append(list(colour))
    return palette


def _as_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(
            f"{name} must be an (H, W) integer array, got shape {mask.shape} and dtype {mask.dtype}"
        )
    return mask


def colorize_mask(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """`(H, W)` class indices → `(H, W, 3)` uint8 colours; indices outside the palette are black."""
    mask = _as_mask(mask)
    lut = np.zeros((len(palette) + 1, 3), dtype=np.uint8)  # the last row (black) is for ignored pixels
    if len(palette):
        lut[:-1] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    inside = (mask >= 0) & (mask < len(palette))
    return lut[np.where(inside, mask, len(palette))]


def overlay_mask(
    image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5
) -> np.ndarray:
    """`(1 - alpha) * image + alpha * colour` per pixel, rounded; ignored pixels keep the image."""
    image = np.asarray(image)
    mask = _as_mask(mask)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be an (H, W, 3) uint8 array, got shape {image.shape} and dtype {image.dtype}"
        )
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image of size {image.shape[:2]} and mask of size {mask.shape} differ")
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize_mask(mask, palette).astype(np.float32)
    out = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    outside = (mask < 0) | (mask >= len(palette))
    out[outside] = image[outside]
    return out


def draw_legend(
    class_names: Sequence[str], palette: Sequence[Sequence[int]], max_width: int | None = None
) -> Image.Image:
    """A white legend, one colour swatch and name per class; wraps into columns within `max_width`."""
    font = ImageFont.load_default()
    pad, swatch = 4, 12
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((int(measure.textlength(str(n), font=font)) for n in class_names), default=0)
    bbox = measure.textbbox((0, 0), "Ag", font=font)
    row_h = max(swatch, bbox[3] - bbox[1]) + pad
    cell_w = pad + swatch + pad + text_w + pad
    columns = max(1, (max_width - pad) // cell_w) if max_width else 1
    columns = min(columns, max(1, len(class_names)))
    rows = -(-len(class_names) // columns)
    width = max(max_width or 0, pad + columns * cell_w)
    legend = Image.new("RGB", (width, pad + rows * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for k, (name, colour) in enumerate(zip(class_names, palette)):
        x = pad + (k % columns) * cell_w
        y = pad + (k // columns) * row_h
        draw.rectangle(
            [x, y, x + swatch - 1, y + swatch - 1], fill=tuple(int(c) for c in colour), outline=(0, 0, 0)
        )
        draw.text(
            (x + swatch + pad, y + (swatch - (bbox[3] - bbox[1])) // 2 - bbox[1]),
            str(name),
            fill=(0, 0, 0),
            font=font,
        )
    return legend


def make_comparison(
    image: np.ndarray,
    gt_mask: np.ndarray | None,
    pred_mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str] | None = None,
    alpha: float = 0.5,
    min_height: int = 0,
) -> Image.Image:
    """image | ground-truth overlay | prediction overlay, side by side, over a legend strip.

    The legend lists only the classes present in either mask. `gt_mask=None` leaves out the
    ground-truth panel. All inputs have the image's `(H, W)`. Panels of images lower than
    `min_height` are enlarged by a whole factor (nearest neighbour), so small images stay readable.
    """
    image = np.asarray(image)
    masks = [m for m in (gt_mask, pred_mask) if m is not None]
    panels = [image, *(overlay_mask(image, m, palette, alpha) for m in masks)]
    factor = -(-min_height // image.shape[0]) if min_height > image.shape[0] else 1
    if factor > 1:
        panels = [p.repeat(factor, axis=0).repeat(factor, axis=1) for p in panels]
    h, w = panels[0].shape[:2]
    if class_names is None:
        class_names = [str(i) for i in range(len(palette))]
    present = sorted(set().union(*(np.unique(_as_mask(m)).tolist() for m in masks)))
    present = [c for c in present if 0 <= c < len(palette)]
    legend = draw_legend(
        [class_names[c] for c in present], [palette[c] for c in present], max_width=w * len(panels)
    )
    canvas = Image.new("RGB", (legend.width, h + legend.height), (255, 255, 255))
    canvas.paste(Image.fromarray(np.concatenate(panels, axis=1)), (0, 0))
    canvas.paste(legend, (0, h))
    return canvas
