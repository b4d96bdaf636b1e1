"""PackSegInputs and seg_collate: the tensors and samples the model receives."""

import numpy as np
import pytest
import torch

from segaccel.data import PackSegInputs, RandomFlip, init_results, seg_collate
from segaccel.structures import SegDataSample


def sample(h: int = 5, w: int = 7, with_gt: bool = True) -> dict:
    img = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    gt = (np.arange(h * w) % 4).reshape(h, w).astype(np.uint8) if with_gt else None
    return init_results(img, gt, img_id="validation/3", img_path="a/b.png", reduce_zero_label=True)


def test_pack_shapes_dtypes_and_values():
    results = sample()
    packed = PackSegInputs()(results)
    inputs, data_sample = packed["inputs"], packed["data_samples"]
    assert inputs.shape == (3, 5, 7) and inputs.dtype == torch.uint8 and inputs.is_contiguous()
    assert torch.equal(inputs, torch.from_numpy(results["img"]).permute(2, 0, 1))
    gt = data_sample.gt_sem_seg.data
    assert gt.shape == (1, 5, 7) and gt.dtype == torch.int64
    assert torch.equal(gt[0], torch.from_numpy(results["gt_seg_map"]).long())
    assert data_sample.metainfo == {
        "img_id": "validation/3",
        "img_path": "a/b.png",
        "ori_shape": (5, 7),
        "img_shape": (5, 7),
        "scale_factor": (1.0, 1.0),
        "flip": False,
        "flip_direction": None,
        "reduce_zero_label": True,
    }


def test_pack_copies_flipped_views_and_keeps_only_chosen_meta_keys():
    results = RandomFlip(prob=1.0)(sample(), rng=np.random.default_rng(0))
    results["img"] = results["img"][:, ::-1]  # a negative-stride view flips it back
    packed = PackSegInputs(meta_keys=("img_shape", "flip", "pad_shape"))(results)
    assert torch.equal(packed["inputs"], torch.from_numpy(sample()["img"]).permute(2, 0, 1))
    assert packed["data_samples"].metainfo == {"img_shape": (5, 7), "flip": True}  # absent keys skipped


def test_pack_without_ground_truth_and_bad_image():
    packed = PackSegInputs()(sample(with_gt=False))
    assert "gt_sem_seg" not in packed["data_samples"]
    bad = sample()
    bad["img"] = bad["img"].astype(np.float32)
    with pytest.raises(TypeError, match="validation/3.*uint8"):
        PackSegInputs()(bad)


def test_collate_makes_lists_without_padding():
    items = [PackSegInputs()(sample(h, w)) for h, w in ((5, 7), (6, 4), (3, 3))]
    batch = seg_collate(items)
    assert set(batch) == {"inputs", "data_samples"}
    assert [tuple(t.shape) for t in batch["inputs"]] == [(3, 5, 7), (3, 6, 4), (3, 3, 3)]
    assert all(a is b["inputs"] for a, b in zip(batch["inputs"], items))
    assert all(isinstance(s, SegDataSample) for s in batch["data_samples"])
    with pytest.raises(ValueError, match="batch item 1"):
        seg_collate([items[0], {"img": 1}])
