"""A user's dataset as a folder: `data/{train,validation}-*.parquet` with `pixel_values`/`annotation`
columns and an `id2label.json`, the Hub layout that `--dataset DIR` reads."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

CLASSES = ["ground", "rock", "water"]
COLOURS = {1: (200, 40, 40), 2: (40, 40, 200)}  # a class's square has its own colour


def sample(rng: np.random.Generator, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """(RGB image, L mask): grey noise with one or two coloured squares, labelled by colour."""
    h, w = size
    image = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for label in rng.permutation([1, 2])[: rng.integers(1, 3)]:
        s = int(rng.integers(h // 4, h // 2))
        y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        image[y : y + s, x : x + s] = COLOURS[int(label)]
        mask[y : y + s, x : x + s] = label
    return Image.fromarray(image), Image.fromarray(mask)


def write_parquet_folder(
    root: Path, sizes: dict[str, int] | None = None, size: tuple[int, int] = (32, 48), seed: int = 0
) -> Path:
    """`root/data/<split>-00000-of-00001.parquet` for each split in `sizes`, and `root/id2label.json`."""
    sizes = sizes or {"train": 12, "validation": 5}
    rng = np.random.default_rng(seed)
    features = datasets.Features({"pixel_values": datasets.Image(), "annotation": datasets.Image()})
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        pairs = [sample(rng, size) for _ in range(n)]
        rows = {"pixel_values": [p[0] for p in pairs], "annotation": [p[1] for p in pairs]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(
            str(root / "data" / f"{split}-00000-of-00001.parquet")
        )
    (root / "id2label.json").write_text(json.dumps({str(i): name for i, name in enumerate(CLASSES)}))
    return root
