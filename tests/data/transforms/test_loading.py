"""The starting results dict and LoadAnnotations (where the label map enters the pipeline)."""

import numpy as np
import pytest
from transform_samples import coordinate_sample

from segaccel.data import Compose, init_results


def test_init_results_metainfo():
    r = coordinate_sample()
    assert r["ori_shape"] == r["img_shape"] == (30, 45)
    assert (r["scale_factor"], r["flip"], r["flip_direction"]) == ((1.0, 1.0), False, None)


def test_load_annotations_keeps_labels_out_of_earlier_transforms():
    original = coordinate_sample()
    deferred = init_results(original["img"], original["gt_seg_map"], defer_gt=True)
    assert "gt_seg_map" not in deferred
    r = Compose([{"type": "Resize", "scale": [90, 60]}, {"type": "LoadAnnotations"}])(deferred)
    assert r["img_shape"] == (60, 90)
    assert np.array_equal(r["gt_seg_map"], original["gt_seg_map"])  # (30, 45): never resized
    assert "pending_gt_seg_map" not in r


def test_load_annotations_points_reduce_zero_label_to_the_dataset():
    with pytest.raises(ValueError, match=r"reduce_zero_label is an option of the dataset"):
        Compose([{"type": "LoadAnnotations", "reduce_zero_label": True}])
