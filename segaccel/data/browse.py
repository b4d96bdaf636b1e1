"""A picture of what a training pipeline produces: transformed samples with their masks overlaid.

`browse_grid` lays out PackSegInputs' outputs as tiles (image | image with the coloured mask),
each captioned with its id, size and flip, over a legend of the classes present — like
MMSegmentation's browse_dataset. Drawing uses `segaccel.visualization`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segaccel.visualization import get_palette, legend_of, readable_overlay


def sample_arrays(output: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """`(H, W, 3)` uint8 image and `(H, W)` mask (or None) of one PackSegInputs output."""
    img = output["inputs"].numpy().transpose(1, 2, 0)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    sample = output["data_samples"]
    mask = sample.gt_sem_seg.data[0].numpy() if "gt_sem_seg" in sample else None
    return np.ascontiguousarray(img[..., :3]), mask


def _caption(meta: dict[str, Any]) -> str:
    h, w = meta.get("img_shape", ("?", "?"))[:2]
    flip = f" flip {meta['flip_direction']}" if meta.get("flip") else ""
    return f"{meta.get('img_id', '')}  {h}x{w}{flip}"


def browse_grid(
    outputs: Sequence[dict[str, Any]],
    palette: Sequence[Sequence[int]] | None = None,
    class_names: Sequence[str] | None = None,
    columns: int = 2,
    tile_size: int = 256,
    alpha: float = 0.5,
) -> Image.Image:
    """A grid of `outputs` (PackSegInputs dicts): per sample, the image and its mask drawn over it
    (`readable_overlay`: desaturated image, class colours, boundaries outlined).

    Each panel is scaled to fit `tile_size` pixels (the longer side) keeping its aspect ratio;
    ignored pixels (255) are left uncoloured. The legend lists the classes present with their share
    of the drawn masks' pixels.
    """
    if not outputs:
        raise ValueError("browse_grid: no samples to draw")
    arrays = [sample_arrays(o) for o in outputs]
    num_classes = max(
        [len(palette or [])]
        + [int(m[m != 255].max()) + 1 for _, m in arrays if m is not None and (m != 255).any()]
    )
    palette = [list(c) for c in (palette or get_palette(num_classes))]
    if len(palette) < num_classes:
        palette += get_palette(num_classes)[len(palette) :]
    names = list(class_names or [str(i) for i in range(num_classes)])
    names += [str(i) for i in range(len(names), num_classes)]

    font = ImageFont.load_default()
    caption_h = 14
    cell_w, cell_h = 2 * tile_size + 6, tile_size + caption_h + 6
    rows = -(-len(outputs) // columns)
    grid = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    masks: list[np.ndarray] = []
    for k, ((img, mask), output) in enumerate(zip(arrays, outputs)):
        panels = [img]
        if mask is not None:
            panels.append(readable_overlay(img, mask, palette, alpha))
            masks.append(np.asarray(mask).reshape(-1))
        x0, y0 = (k % columns) * cell_w, (k // columns) * cell_h
        draw.text((x0 + 2, y0 + 1), _caption(output["data_samples"].metainfo), fill=(0, 0, 0), font=font)
        for j, panel in enumerate(panels):
            picture = Image.fromarray(panel)
            scale = tile_size / max(picture.size)
            size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
            picture = picture.resize(size, Image.Resampling.NEAREST)
            grid.paste(picture, (x0 + j * (tile_size + 4), y0 + caption_h))
    every_mask = np.concatenate(masks)[None] if masks else np.zeros((1, 0), np.int64)
    legend = legend_of([("", every_mask)], palette, names, grid.width)
    canvas = Image.new("RGB", (grid.width, grid.height + legend.height), (255, 255, 255))
    canvas.paste(grid, (0, 0))
    canvas.paste(legend, (0, grid.height))
    return canvas
