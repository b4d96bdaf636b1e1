"""The built-in synthetic dataset: coloured shapes on textured backgrounds, no download needed.

Each image holds 1..`max_objects` shapes (circle, rotated square, triangle) of random size,
position and colour on a noisy background; later shapes may occlude earlier ones. The colour of a
shape is drawn independently of its class, so a model must learn shapes, not colours. The label
map is the exact class of every visible pixel (0 = background).

Generation is deterministic: sample `i` of split `s` is drawn from
`np.random.default_rng([seed, split_id(s), i])`, and the same arguments give byte-identical
datasets. The result is cached with `DatasetDict.save_to_disk` under `cache_dir` in a folder named
by a hash of the arguments; the folder is written under a temporary name and renamed into place,
so a half-written cache never looks complete and concurrent generators do not collide.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import uuid
from pathlib import Path

import datasets
import numpy as np
from PIL import Image, ImageDraw

SYNTHETIC_CLASSES = ("background", "circle", "square", "triangle")
SYNTHETIC_PALETTE = ((0, 0, 0), (220, 20, 60), (0, 160, 80), (30, 120, 255))

# Bump when the drawing code changes, so that old caches are not reused.
GENERATOR_VERSION = 1

_SPLIT_IDS = {"train": 0, "validation": 1}


def synthetic_id2label() -> dict[int, str]:
    """`{0: "background", 1: "circle", 2: "square", 3: "triangle"}`."""
    return dict(enumerate(SYNTHETIC_CLASSES))


def default_cache_dir() -> Path:
    """`$SEGACCEL_CACHE`, else `~/.cache/segaccel`."""
    return Path(os.environ.get("SEGACCEL_CACHE") or Path.home() / ".cache" / "segaccel")


def load_synthetic_dataset(
    num_train: int = 2000,
    num_val: int = 200,
    image_size: tuple[int, int] = (64, 64),
    max_objects: int = 3,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    *,
    min_objects: int = 1,
    object_size: tuple[float, float] = (0.2, 0.5),
    min_contrast: float = 60.0,
    background_noise: float = 12.0,
    object_noise: float = 8.0,
    texture_amplitude: float = 30.0,
) -> datasets.DatasetDict:
    """The synthetic dataset with splits `train` and `validation` (columns `image`, `label`).

    `image_size` is `(h, w)`. `object_size` is the range of a shape's size as a fraction of the
    shorter image side. `min_contrast` is the least RGB distance between a shape's colour and the
    background's (and earlier shapes') base colour. `background_noise`/`object_noise` are the
    per-pixel Gaussian noise std, `texture_amplitude` the strength of the smooth background texture.
    """
    params = _check_params(
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        max_objects=max_objects,
        seed=seed,
        min_objects=min_objects,
        object_size=object_size,
        min_contrast=min_contrast,
        background_noise=background_noise,
        object_noise=object_noise,
        texture_amplitude=texture_amplitude,
    )
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "synthetic" / f"synthetic-{_params_hash(params)}"
    if not target.is_dir():
        _write_atomically(params, target)
    return datasets.load_from_disk(str(target))


def generate_synthetic_split(params: dict, split: str) -> datasets.Dataset:
    """Render one split in memory (no cache); `params` as checked by `load_synthetic_dataset`."""
    count = params["num_train"] if split == "train" else params["num_val"]
    images, labels = [], []
    for index in range(count):
        rng = np.random.default_rng([params["seed"], _SPLIT_IDS[split], index])
        img, label = render_sample(rng, **_render_kwargs(params))
        images.append({"bytes": _png_bytes(img), "path": None})
        labels.append({"bytes": _png_bytes(label), "path": None})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features, split=split)


def render_sample(
    rng: np.random.Generator,
    image_size: tuple[int, int],
    min_objects: int,
    max_objects: int,
    object_size: tuple[float, float],
    min_contrast: float,
    background_noise: float,
    object_noise: float,
    texture_amplitude: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One image `(H, W, 3)` uint8 and its label map `(H, W)` uint8 of class ids."""
    h, w = image_size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    centre = (0.5 * w / max(h, w), 0.5 * h / max(h, w))

    base = rng.uniform(0, 255, 3).astype(np.float32)
    # A smooth gradient plus low-frequency waves, each with its own colour direction, plus noise.
    img = base + _smooth_texture(rng, xx, yy, centre, texture_amplitude, freq_range=(0.3, 2.0), waves=3)
    img += rng.normal(0.0, background_noise, (h, w, 3)).astype(np.float32)
    label = np.zeros((h, w), np.uint8)

    used_colours = [base]
    num_objects = int(rng.integers(min_objects, max_objects + 1))
    side = min(h, w)
    for _ in range(num_objects):
        cls = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
        colour = _contrasting_colour(rng, used_colours, min_contrast)
        used_colours.append(colour)
        size = rng.uniform(*object_size) * side
        cx = rng.uniform(min(size / 2, w / 2), max(w - size / 2, w / 2))
        cy = rng.uniform(min(size / 2, h / 2), max(h - size / 2, h / 2))
        angle = rng.uniform(0.0, 2 * math.pi)
        mask = _shape_mask(SYNTHETIC_CLASSES[cls], (h, w), cx, cy, size, angle)
        # The object's own texture and noise, evaluated only where it is visible.
        texture = _smooth_texture(rng, xx[mask], yy[mask], centre, texture_amplitude / 2, (1.0, 4.0), waves=2)
        noise = rng.normal(0.0, object_noise, texture.shape).astype(np.float32)
        img[mask] = colour + texture + noise
        label[mask] = cls
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), label


def _smooth_texture(
    rng: np.random.Generator,
    xx: np.ndarray,
    yy: np.ndarray,
    centre: tuple[float, float],
    amplitude: float,
    freq_range: tuple[float, float],
    waves: int,
) -> np.ndarray:
    """`(*xx.shape, 3)` float: a linear gradient plus `waves` random sinusoids, each of a random colour.

    `xx`, `yy` are pixel coordinates divided by the longer image side (frequencies are in cycles
    per longer side).
    """
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (xx - centre[0]) * math.cos(theta) + (yy - centre[1]) * math.sin(theta)
    out = ramp[..., None] * rng.uniform(-amplitude, amplitude, 3).astype(np.float32)
    for _ in range(waves):
        freq = rng.uniform(*freq_range)
        theta = rng.uniform(0, 2 * math.pi)
        phase = rng.uniform(0, 2 * math.pi)
        wave = np.sin(2 * math.pi * freq * (xx * math.cos(theta) + yy * math.sin(theta)) + phase)
        out += wave[..., None] * (rng.uniform(-amplitude, amplitude, 3).astype(np.float32) / 2)
    return out


def _contrasting_colour(rng: np.random.Generator, used: list[np.ndarray], min_contrast: float) -> np.ndarray:
    """A uniform random RGB colour at least `min_contrast` away from every colour in `used`.

    The same rule holds for every class, so colour says nothing about the class.
    """
    used_arr = np.stack(used)
    for _ in range(50):
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        if np.sqrt(((used_arr - colour) ** 2).sum(axis=1)).min() >= min_contrast:
            break
    return colour


def _shape_mask(
    shape: str, hw: tuple[int, int], cx: float, cy: float, size: float, angle: float
) -> np.ndarray:
    """Boolean `(H, W)` mask of one shape; `size` is its diameter (circle) or about that extent."""
    h, w = hw
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        r = size / 2
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1)
    else:
        if shape == "square":
            radius, corners = 0.85 * size / math.sqrt(2), 4  # side 0.85 * size
        elif shape == "triangle":
            radius, corners = 0.6 * size, 3  # equilateral, circumradius 0.6 * size
        else:
            raise ValueError(f"unknown synthetic shape {shape!r}")
        points = [
            (
                cx + radius * math.cos(angle + 2 * math.pi * k / corners),
                cy + radius * math.sin(angle + 2 * math.pi * k / corners),
            )
            for k in range(corners)
        ]
        draw.polygon(points, fill=1)
    return np.asarray(canvas, dtype=bool)


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _check_params(**params) -> dict:
    h_w = params["image_size"]
    if not (isinstance(h_w, (tuple, list)) and len(h_w) == 2 and all(int(v) == v and v > 0 for v in h_w)):
        raise ValueError(f"synthetic dataset: image_size must be (h, w) of positive ints, got {h_w!r}")
    params["image_size"] = [int(h_w[0]), int(h_w[1])]
    for key in ("num_train", "num_val", "seed", "min_objects", "max_objects"):
        if int(params[key]) != params[key] or params[key] < 0:
            raise ValueError(f"synthetic dataset: {key} must be a non-negative int, got {params[key]!r}")
        params[key] = int(params[key])
    for key in ("num_train", "num_val"):  # `datasets` cannot read back a split saved without rows
        if params[key] == 0:
            raise ValueError(
                f"synthetic dataset: {key} is 0: every split needs at least one sample (empty split)"
            )
    if not params["min_objects"] <= params["max_objects"]:
        raise ValueError(
            f"synthetic dataset: min_objects ({params['min_objects']}) must not exceed "
            f"max_objects ({params['max_objects']})"
        )
    lo, hi = params["object_size"]
    if not 0 < lo <= hi:
        raise ValueError(
            f"synthetic dataset: object_size must be (low, high) with 0 < low <= high, got {(lo, hi)}"
        )
    params["object_size"] = [float(lo), float(hi)]
    for key in ("min_contrast", "background_noise", "object_noise", "texture_amplitude"):
        if params[key] < 0:
            raise ValueError(f"synthetic dataset: {key} must be >= 0, got {params[key]!r}")
        params[key] = float(params[key])
    return params


def _render_kwargs(params: dict) -> dict:
    keys = (
        "min_objects",
        "max_objects",
        "object_size",
        "min_contrast",
        "background_noise",
        "object_noise",
        "texture_amplitude",
    )
    return {"image_size": tuple(params["image_size"]), **{k: params[k] for k in keys}}


def _params_hash(params: dict) -> str:
    blob = json.dumps({"version": GENERATOR_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_atomically(params: dict, target: Path) -> None:
    """Generate and `save_to_disk` into a temporary sibling of `target`, then rename it into place.

    If another process renamed its copy first, ours is discarded and the winner's is used.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    try:
        splits = {split: generate_synthetic_split(params, split) for split in _SPLIT_IDS}
        bars_were_on = not datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # a few thousand tiny rows: the bars are only noise
        try:
            datasets.DatasetDict(splits).save_to_disk(str(tmp))
        finally:
            if bars_were_on:
                datasets.enable_progress_bars()
        with open(tmp / "segaccel_synthetic.json", "w", encoding="utf-8") as f:
            json.dump({"version": GENERATOR_VERSION, **params}, f, sort_keys=True, indent=1)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
