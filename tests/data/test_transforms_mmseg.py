"""The rest of MMSegmentation's transform set: RandomChoiceResize, ResizeShortestEdge, RandomRotate, Pad,
RandomCutOut, RGB2Gray — metainfo bookkeeping, 255 handling, seeded reproducibility."""

import hashlib
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from segaccel.data import (
    Compose,
    Pad,
    RandomChoiceResize,
    RandomCutOut,
    RandomRotate,
    Resize,
    ResizeShortestEdge,
    RGB2Gray,
    SegDataset,
    init_results,
    seg_collate,
)
from segaccel.registry import TRANSFORMS


def sample(h: int = 30, w: int = 45, with_gt: bool = True) -> dict:
    """Pixel (y, x) holds (y, x, 7); the mask has blocks 0, 3, 7 and an ignored (255) corner."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([yy, xx, np.full_like(yy, 7)], axis=-1).astype(np.uint8)
    gt = np.zeros((h, w), np.uint8)
    gt[: h // 2, w // 2 :] = 3
    gt[h // 2 :, : w // 2] = 7
    gt[h // 2 :, w // 2 :] = 255
    return init_results(img, gt if with_gt else None, img_id="train/0")


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- RandomChoiceResize / ResizeShortestEdge ---------------------------------------------------------


def test_random_choice_resize_picks_each_scale_and_records_it():
    t = RandomChoiceResize(scales=[[90, 60], [45, 30], [60, 20]], keep_ratio=False)
    seen = {}
    for seed in range(30):
        r = t(sample(), rng=rng(seed))
        w, h = r["scale"]
        assert r["img_shape"] == (h, w) and r["gt_seg_map"].shape == (h, w)
        assert r["scale_factor"] == pytest.approx((w / 45, h / 30))
        assert [[90, 60], [45, 30], [60, 20]][r["scale_idx"]] == [w, h]
        seen[r["scale_idx"]] = True
    assert sorted(seen) == [0, 1, 2]
    kept = RandomChoiceResize(scales=[[90, 50]])(sample(), rng=rng(0))  # keep_ratio: fits 90x50 -> 75x50
    assert kept["img_shape"] == (50, 75) and kept["keep_ratio"] is True
    assert set(np.unique(kept["gt_seg_map"]).tolist()) == {0, 3, 7, 255}  # nearest: 255 survives


@pytest.mark.parametrize(
    "shape, scale, max_size, expected_hw",
    [
        ((30, 45), 60, None, (60, 90)),  # landscape: short edge h -> 60
        ((45, 30), 60, None, (90, 60)),  # portrait: short edge w -> 60
        ((30, 45), 60, 80, (53, 80)),  # long edge 90 > 80: scaled by 80/90, rounded half up
        ((30, 45), (100, 60), None, (60, 90)),  # a pair: its smaller value
    ],
)
def test_resize_shortest_edge(shape, scale, max_size, expected_hw):
    r = ResizeShortestEdge(scale=scale, max_size=max_size)(sample(*shape))
    h, w = expected_hw
    assert r["img_shape"] == (h, w) and r["img"].shape == (h, w, 3) and r["gt_seg_map"].shape == (h, w)
    assert r["ori_shape"] == shape
    assert r["scale_factor"] == pytest.approx((w / shape[1], h / shape[0]))
    assert r["scale"] == (w, h)


# --- RandomRotate -------------------------------------------------------------------------------------


def test_rotate_by_90_degrees_with_auto_bound_is_a_clockwise_quarter_turn():
    original = sample()
    r = RandomRotate(prob=1.0, degree=(90, 90), auto_bound=True)(sample(), rng=rng(0))
    assert r["rotate_degree"] == 90.0 and r["img_shape"] == (45, 30)
    assert np.array_equal(r["img"], np.rot90(original["img"], k=-1))  # exact: no pixel is interpolated
    assert np.array_equal(r["gt_seg_map"], np.rot90(original["gt_seg_map"], k=-1))


def test_rotate_pads_uncovered_pixels_and_keeps_labels():
    original = sample(40, 40)
    t = RandomRotate(prob=1.0, degree=(30, 30), pad_val=9, seg_pad_val=255)
    r = t(sample(40, 40), rng=rng(0))
    assert r["img_shape"] == (40, 40) and r["gt_seg_map"].dtype == np.uint8
    # the corners are outside the rotated image: pad values there
    assert r["gt_seg_map"][0, 0] == 255 and r["img"][0, 0].tolist() == [9, 9, 9]
    # nearest neighbour: no new label appears, 255 stays 255
    assert set(np.unique(r["gt_seg_map"]).tolist()) <= set(np.unique(original["gt_seg_map"]).tolist())
    # the centre pixel stays (rotation about ((w - 1) / 2, (h - 1) / 2) = (19.5, 19.5))
    assert r["gt_seg_map"][20, 20] == original["gt_seg_map"][20, 20]


def test_rotate_probability_and_reproducibility():
    t = RandomRotate(prob=0.5, degree=20)
    assert t.degree == (-20.0, 20.0)
    outcomes = [t(sample(), rng=rng(s))["rotate_degree"] for s in range(40)]
    rotated = [d for d in outcomes if d is not None]
    assert 10 < len(rotated) < 30 and all(-20 <= d <= 20 for d in rotated)
    a, b = t(sample(), rng=rng(3)), t(sample(), rng=rng(3))
    assert a["rotate_degree"] == b["rotate_degree"] and np.array_equal(a["img"], b["img"])
    kept = RandomRotate(prob=0.0, degree=20)(sample(), rng=rng(0))
    assert kept["rotate_degree"] is None and np.array_equal(kept["img"], sample()["img"])


# --- Pad -------------------------------------------------------------------------------------------------


def test_pad_to_size_right_and_bottom_with_255_labels():
    r = Pad(size=(40, 50), pad_val={"img": 5, "seg": 255})(sample())  # size is (h, w)
    assert r["img"].shape == (40, 50, 3) and r["gt_seg_map"].shape == (40, 50)
    assert np.array_equal(r["img"][:30, :45], sample()["img"]) and (r["img"][30:] == 5).all()
    assert (r["img"][:, 45:] == 5).all()
    assert (r["gt_seg_map"][30:] == 255).all() and (r["gt_seg_map"][:, 45:] == 255).all()
    assert r["pad_shape"] == r["img_shape"] == (40, 50) and r["ori_shape"] == (30, 45)
    assert r["pad_fixed_size"] == (40, 50) and r["pad_size_divisor"] is None


def test_pad_to_a_multiple_or_a_square_and_other_modes():
    assert Pad(size_divisor=16)(sample())["img_shape"] == (32, 48)
    assert Pad(size_divisor=15)(sample())["img_shape"] == (30, 45)  # already a multiple: unchanged
    assert Pad(pad_to_square=True)(sample())["img_shape"] == (45, 45)
    assert Pad(pad_to_square=True, size_divisor=16)(sample())["img_shape"] == (48, 48)
    reflect = Pad(size=(32, 47), padding_mode="reflect")(sample())
    assert np.array_equal(reflect["img"][30, :45], sample()["img"][28])  # row 30 mirrors row 28
    assert np.array_equal(reflect["img"][:30, 45], sample()["img"][:, 43])  # column 45 mirrors 43
    assert (reflect["gt_seg_map"][30:] == 255).all()  # masks are always padded with the constant
    with pytest.raises(ValueError, match=r"larger than the pad size \(20, 50\)"):
        Pad(size=(20, 50))(sample())


def test_pad_before_load_annotations_leaves_labels_alone():
    deferred = init_results(sample()["img"], sample()["gt_seg_map"], defer_gt=True)
    r = Compose([Pad(size=(32, 48)), {"type": "LoadAnnotations"}])(deferred)
    assert r["img_shape"] == (32, 48) and r["gt_seg_map"].shape == (30, 45)


# --- RandomCutOut ---------------------------------------------------------------------------------------


def test_cutout_fills_the_recorded_boxes():
    t = RandomCutOut(prob=1.0, n_holes=3, cutout_shape=(5, 8), fill_in=(1, 2, 3), seg_fill_in=255)
    r = t(sample(), rng=rng(4))
    original = sample()
    assert len(r["cutout_boxes"]) == 3
    filled = np.zeros((30, 45), bool)
    for y0, y1, x0, x1 in r["cutout_boxes"]:
        assert y1 - y0 == min(5, 30 - y0) and x1 - x0 == min(8, 45 - x0)  # (h, w), clipped at the border
        filled[y0:y1, x0:x1] = True
    assert (r["img"][filled] == [1, 2, 3]).all() and (r["gt_seg_map"][filled] == 255).all()
    assert np.array_equal(r["img"][~filled], original["img"][~filled])
    assert np.array_equal(r["gt_seg_map"][~filled], original["gt_seg_map"][~filled])


def test_cutout_ratio_holes_range_and_probability():
    t = RandomCutOut(prob=1.0, n_holes=(1, 3), cutout_ratio=[(0.2, 0.1), (0.1, 0.2)])
    counts = set()
    for s in range(20):
        r = t(sample(), rng=rng(s))
        counts.add(len(r["cutout_boxes"]))
        for y0, y1, x0, x1 in r["cutout_boxes"]:
            assert (y1 - y0, x1 - x0) in {
                (min(6, 30 - y0), min(4, 45 - x0)),
                (min(3, 30 - y0), min(9, 45 - x0)),
            }
        assert np.array_equal(r["gt_seg_map"], sample()["gt_seg_map"])  # no seg_fill_in: mask untouched
    assert counts == {1, 2, 3}
    none = RandomCutOut(prob=0.0, n_holes=2, cutout_shape=(4, 4))(sample(), rng=rng(0))
    assert none["cutout_boxes"] == [] and np.array_equal(none["img"], sample()["img"])


# --- RGB2Gray -------------------------------------------------------------------------------------------


def test_rgb2gray_luma_and_channels():
    img = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    r = RGB2Gray()(init_results(img, np.zeros((1, 4), np.uint8)))
    expected = np.rint([255 * 0.299, 255 * 0.587, 255 * 0.114, 10 * 0.299 + 20 * 0.587 + 30 * 0.114])
    assert r["img"].shape == (1, 4, 3) and r["img"].dtype == np.uint8
    assert (r["img"][0, :, 0] == expected).all() and (r["img"][..., 0] == r["img"][..., 2]).all()
    one = Compose([RGB2Gray(out_channels=1), {"type": "PackSegInputs"}])(init_results(img))
    assert one["inputs"].shape == (1, 1, 4) and one["data_samples"].img_shape == (1, 4)


# --- shared behaviour -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "transform",
    [
        RandomChoiceResize(scales=[[60, 40]]),
        RandomRotate(prob=1.0, degree=10),
        RandomCutOut(prob=1.0, n_holes=1, cutout_shape=(2, 2)),
    ],
)
def test_random_transforms_need_an_rng(transform):
    with pytest.raises(ValueError, match="rng"):
        transform(sample())


def test_new_transforms_are_registered_and_built_from_config():
    for name in (
        "RandomChoiceResize",
        "ResizeShortestEdge",
        "RandomRotate",
        "Pad",
        "RandomCutOut",
        "RGB2Gray",
    ):
        assert name in TRANSFORMS
    pipeline = Compose(
        [
            {"type": "ResizeShortestEdge", "scale": 40, "max_size": 100},
            {"type": "RandomRotate", "prob": 1.0, "degree": [90, 90], "auto_bound": True},
            {"type": "Pad", "size_divisor": 32},
            {"type": "PackSegInputs"},
        ]
    )
    out = pipeline(sample(), rng=rng(0))
    meta = out["data_samples"].metainfo
    assert meta["ori_shape"] == (30, 45)  # the original size, for mapping predictions back
    assert meta["scale_factor"] == pytest.approx((60 / 45, 40 / 30))  # resize: 30x45 -> 40x60
    assert meta["img_shape"] == (64, 64) and out["inputs"].shape == (3, 64, 64)  # rotated 60x40, padded
    gt = out["data_samples"].gt_sem_seg.data[0]
    assert gt.shape == (64, 64) and (gt[60:] == 255).all() and (gt[:, 40:] == 255).all()


# --- reproducibility per worker and per process --------------------------------------------------------

PIPELINE = [
    {"type": "RandomChoiceResize", "scales": [[64, 40], [80, 48]]},
    {"type": "RandomRotate", "prob": 0.7, "degree": 15},
    {"type": "RandomCrop", "crop_size": [24, 32], "cat_max_ratio": 0.75},
    {"type": "RandomFlip", "prob": 0.5},
    {"type": "RandomCutOut", "prob": 0.5, "n_holes": [1, 2], "cutout_shape": [4, 4], "seg_fill_in": 255},
    {"type": "PhotoMetricDistortion"},
    {"type": "Pad", "size": [32, 32]},
    {"type": "PackSegInputs"},
]


def rows(n: int = 4) -> datasets.Dataset:
    g = np.random.default_rng(0)
    images = [Image.fromarray(g.integers(0, 256, (30, 45, 3), dtype=np.uint8)) for _ in range(n)]
    labels = [Image.fromarray(g.integers(0, 4, (30, 45), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def digest(outputs: list[dict]) -> str:
    h = hashlib.sha256()
    for out in outputs:
        h.update(out["inputs"].numpy().tobytes())
        h.update(out["data_samples"].gt_sem_seg.data.numpy().tobytes())
    return h.hexdigest()


def test_same_augmentation_in_workers_and_in_another_process(tmp_path):
    data = rows()
    ds = SegDataset(data, pipeline=PIPELINE, seed=7)
    indices = [(2, i) for i in range(4)]
    main = [ds[i] for i in indices]
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, sampler=indices, num_workers=2, collate_fn=seg_collate
    )
    in_workers = [
        {"inputs": x, "data_samples": s} for b in loader for x, s in zip(b["inputs"], b["data_samples"])
    ]
    assert digest(in_workers) == digest(main)

    data.save_to_disk(str(tmp_path / "rows"))
    code = (
        "import datasets, sys; sys.path.insert(0, 'tests/data');"
        "from test_transforms_mmseg import PIPELINE, digest; from segaccel.data import SegDataset;"
        f"ds = SegDataset(datasets.load_from_disk({str(tmp_path / 'rows')!r}), pipeline=PIPELINE, seed=7);"
        "print(digest([ds[(2, i)] for i in range(4)]))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == digest(main)
    assert digest([SegDataset(data, pipeline=PIPELINE, seed=8)[i] for i in indices]) != digest(main)


def test_resize_keeps_ignore_labels_when_downscaling():
    r = Resize(scale=(15, 10), keep_ratio=False)(sample())
    assert 255 in np.unique(r["gt_seg_map"]) and set(np.unique(r["gt_seg_map"]).tolist()) <= {0, 3, 7, 255}


def test_load_annotations_points_reduce_zero_label_to_the_dataset():
    with pytest.raises(ValueError, match=r"reduce_zero_label is an option of the dataset"):
        Compose([{"type": "LoadAnnotations", "reduce_zero_label": True}])
