"""Palettes and overlays for looking at segmentation masks (Pillow and numpy only).

Masks are `(H, W)` integer class indices; pixels outside `[0, len(palette))` (255 = ignore) are
drawn black by `colorize_mask` and left untouched by `overlay_mask`.

Every picture segaccel draws (training overlays, `test.py --show-dir`, `infer.py --overlay`,
`browse_dataset.py`, the demo) uses `readable_overlay`, so the legend's colours can be matched:

- the image is **desaturated** first (`desaturate`: `(1 - d) * rgb + d * grey`, grey the luma
  `0.299 R + 0.587 G + 0.114 B`, `d = DESATURATION` = 0.7), so the objects' own colours do not mix
  with the class colours;
- a pixel of class `c` is `round((1 - alpha) * desaturated + alpha * palette[c])` (alpha 0.5);
  an ignored pixel (255, or outside the palette) is the desaturated image alone;
- **class boundaries** (a pixel whose label differs from one of its 4 neighbours) are drawn in
  `OUTLINE` (white);
- the legend lists the classes present with their **pixel share** (`class_shares`: percent of the
  mask's pixels).

One palette per dataset: the model's `palette` (from its config, else the training dataset's
`palette`, else `get_palette(num_classes)`), the same in every tool.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Saturation/value levels, cycled every few hues so that neighbouring classes differ in more than hue.
_LEVELS = ((0.85, 0.95), (0.55, 0.85), (1.0, 0.65), (0.35, 1.0), (0.75, 0.5))
_GOLDEN = 0.6180339887498949
LUMA = (0.299, 0.587, 0.114)
DESATURATION = 0.7
OUTLINE = (255, 255, 255)
ERROR_COLOUR = (255, 0, 0)


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


def desaturate(image: np.ndarray, amount: float = DESATURATION) -> np.ndarray:
    """`(1 - amount) * rgb + amount * luma` per pixel, float32 (not rounded): the image under the colours."""
    image = np.asarray(image).astype(np.float32)
    grey = image @ np.asarray(LUMA, dtype=np.float32)
    return (1 - amount) * image + amount * grey[..., None]


def class_boundaries(mask: np.ndarray) -> np.ndarray:
    """`(H, W)` bool: pixels whose label differs from one of their 4 neighbours (inside the image)."""
    mask = _as_mask(mask)
    edge = np.zeros(mask.shape, dtype=bool)
    vertical = mask[1:] != mask[:-1]
    horizontal = mask[:, 1:] != mask[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def readable_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    alpha: float = 0.5,
    desaturation: float = DESATURATION,
    outline: Sequence[int] | None = OUTLINE,
) -> np.ndarray:
    """The mask over the desaturated image, class boundaries outlined (see the module docstring).

    Class pixels: `round((1 - alpha) * desaturate(image) + alpha * palette[c])`; ignored pixels:
    `round(desaturate(image))`; boundary pixels: `outline` (None: not drawn).
    """
    image = _as_image(image, mask)
    mask = _as_mask(mask)
    base = desaturate(image, desaturation)
    inside = (mask >= 0) & (mask < len(palette))
    colours = colorize_mask(mask, palette).astype(np.float32)
    blended = np.where(inside[..., None], (1 - alpha) * base + alpha * colours, base)
    out = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    if outline is not None:
        out[class_boundaries(mask)] = np.asarray(outline, dtype=np.uint8)
    return out


def error_overlay(
    image: np.ndarray, gt_mask: np.ndarray, pred_mask: np.ndarray, ignore_index: int = 255
) -> tuple[np.ndarray, float]:
    """Wrong pixels in `ERROR_COLOUR` over the desaturated image; and their percent of labelled pixels.

    A pixel is wrong where the ground truth is labelled (not `ignore_index`) and the prediction
    differs; correct and unlabelled pixels show the desaturated image.
    """
    image = _as_image(image, gt_mask)
    gt, pred = _as_mask(gt_mask, "gt_mask"), _as_mask(pred_mask, "pred_mask")
    labelled = gt != ignore_index
    wrong = labelled & (gt != pred)
    out = np.clip(np.round(desaturate(image)), 0, 255).astype(np.uint8)
    out[wrong] = np.asarray(ERROR_COLOUR, dtype=np.uint8)
    share = 100.0 * wrong.sum() / labelled.sum() if labelled.any() else 0.0
    return out, float(share)


def class_shares(mask: np.ndarray, num_classes: int) -> dict[int, float]:
    """Percent of the mask's pixels per class present (ids in `[0, num_classes)`), by class id."""
    mask = _as_mask(mask)
    ids, counts = np.unique(mask, return_counts=True)
    return {int(i): 100.0 * int(n) / mask.size for i, n in zip(ids, counts) if 0 <= i < num_classes}


def _as_image(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be an (H, W, 3) uint8 array, got shape {image.shape} and dtype {image.dtype}"
        )
    if image.shape[:2] != _as_mask(mask).shape:
        raise ValueError(f"image of size {image.shape[:2]} and mask of size {_as_mask(mask).shape} differ")
    return image


def format_share(share: float) -> str:
    """A pixel share for a legend: `12.3 %`, `<0.1 %` for a sliver."""
    return "<0.1 %" if 0 < share < 0.05 else f"{share:.1f} %"


def draw_legend(
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    max_width: int | None = None,
    notes: Sequence[str] | None = None,
) -> Image.Image:
    """A white legend, one colour swatch and name per class (then its `notes` entry, e.g. its pixel
    share); wraps into columns within `max_width`."""
    font = ImageFont.load_default()
    pad, swatch = 4, 12
    labels = [
        f"{n}  {note}" if note else str(n) for n, note in zip(class_names, notes or [""] * len(class_names))
    ]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((int(measure.textlength(label, font=font)) for label in labels), default=0)
    bbox = measure.textbbox((0, 0), "Ag", font=font)
    row_h = max(swatch, bbox[3] - bbox[1]) + pad
    cell_w = pad + swatch + pad + text_w + pad
    columns = max(1, (max_width - pad) // cell_w) if max_width else 1
    columns = min(columns, max(1, len(labels)))
    rows = -(-len(labels) // columns)
    width = max(max_width or 0, pad + columns * cell_w)
    legend = Image.new("RGB", (width, pad + rows * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for k, (label, colour) in enumerate(zip(labels, palette)):
        x = pad + (k % columns) * cell_w
        y = pad + (k // columns) * row_h
        draw.rectangle(
            [x, y, x + swatch - 1, y + swatch - 1], fill=tuple(int(c) for c in colour), outline=(0, 0, 0)
        )
        draw.text(
            (x + swatch + pad, y + (swatch - (bbox[3] - bbox[1])) // 2 - bbox[1]),
            label,
            fill=(0, 0, 0),
            font=font,
        )
    return legend


TITLE_HEIGHT = 16


def titled_row(panels: Sequence[tuple[str, np.ndarray]]) -> Image.Image:
    """Panels side by side (same height), each under its title on a white strip `TITLE_HEIGHT` high."""
    font = ImageFont.load_default()
    h = panels[0][1].shape[0]
    width = sum(p.shape[1] for _, p in panels)
    row = Image.new("RGB", (width, TITLE_HEIGHT + h), (255, 255, 255))
    draw = ImageDraw.Draw(row)
    x = 0
    for title, panel in panels:
        row.paste(Image.fromarray(panel), (x, TITLE_HEIGHT))
        draw.text((x + 3, 2), title, fill=(0, 0, 0), font=font)
        x += panel.shape[1]
    return row


def legend_of(
    masks: Sequence[tuple[str, np.ndarray]],
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str] | None,
    max_width: int,
) -> Image.Image:
    """The legend of the classes present in `masks` (named `(label, mask)`), each with its pixel share
    in every mask (`12.3 %`, or `ground truth 12.3 %, prediction 10.0 %` for several)."""
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(palette))]
    shares = [(label, class_shares(m, len(palette))) for label, m in masks]
    present = sorted(set().union(*(s.keys() for _, s in shares)))
    if len(shares) == 1:
        notes = [format_share(shares[0][1].get(c, 0.0)) for c in present]
    else:
        notes = [", ".join(f"{label} {format_share(s.get(c, 0.0))}" for label, s in shares) for c in present]
    return draw_legend([names[c] for c in present], [palette[c] for c in present], max_width, notes)


def _stack(*parts: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts)), (255, 255, 255))
    y = 0
    for part in parts:
        canvas.paste(part, (0, y))
        y += part.height
    return canvas


def make_comparison(
    image: np.ndarray,
    gt_mask: np.ndarray | None,
    pred_mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str] | None = None,
    alpha: float = 0.5,
    min_height: int = 0,
) -> Image.Image:
    """Titled panels "image | ground truth | prediction | errors" over a legend of the classes present.

    The overlays are `readable_overlay`s; "errors" (`error_overlay`, its title giving the percent of
    labelled pixels wrong) needs the ground truth: `gt_mask=None` leaves out both. The legend gives
    each class's pixel share in the ground truth and the prediction. All inputs have the image's
    `(H, W)`. Images lower than `min_height` are enlarged by a whole factor (nearest neighbour)
    before drawing, so small images stay readable and outlines stay one pixel wide.
    """
    image, pred_mask = np.asarray(image), _as_mask(pred_mask, "pred_mask")
    factor = -(-min_height // image.shape[0]) if min_height > image.shape[0] else 1

    def big(a: np.ndarray) -> np.ndarray:
        return a.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else a

    image, pred = big(image), big(pred_mask)
    panels = [("image", image)]
    masks = []
    if gt_mask is not None:
        gt = big(_as_mask(gt_mask, "gt_mask"))
        panels.append(("ground truth", readable_overlay(image, gt, palette, alpha)))
        masks.append(("ground truth", gt))
    panels.append(("prediction", readable_overlay(image, pred, palette, alpha)))
    masks.append(("prediction", pred))
    if gt_mask is not None:
        errors, share = error_overlay(image, gt, pred)
        panels.append((f"errors ({share:.1f} %)", errors))
    row = titled_row(panels)
    return _stack(row, legend_of(masks, palette, class_names, row.width))


def overlay_with_legend(
    image: np.ndarray,
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str] | None = None,
    alpha: float = 0.5,
) -> Image.Image:
    """One image's `readable_overlay` above a legend of the classes present with their pixel shares."""
    overlay = Image.fromarray(readable_overlay(image, mask, palette, alpha))
    return _stack(overlay, legend_of([("", _as_mask(mask))], palette, class_names, overlay.width))
