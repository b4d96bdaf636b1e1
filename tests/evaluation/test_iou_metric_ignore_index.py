"""IoUMetric when `ignore_index == num_classes` (5 classes, ignore 5): the ignored label is the first
value past the classes, the edge where an ignore check written `> num_classes` instead of
`>= num_classes` would count the ignored pixels as predictions. Worked by hand; both counting paths
(the CPU histogram for small label values, the torch bincount for any values) must agree with it.
"""

import numpy as np
import pytest
import torch

from segaccel.evaluation import IoUMetric
from segaccel.structures import PixelData, SegDataSample

# 5 classes, 5 = ignore:
#   label = [[0, 1, 5, 5],     pred = [[0, 1, 2, 2],
#            [2, 2, 5, 4]]             [2, 3, 2, 4]]
# The three ignored pixels (all predicted 2) count nowhere; the others are (label, pred) =
# (0,0) (1,1) (2,2) (2,3) (4,4):
#   class 0: I 1, U 1 -> 100;  class 1: I 1, U 1 -> 100;  class 2: I 1, pred 1, label 2, U 2 -> 50
#   class 3: I 0, pred 1, label 0, U 1 -> 0;  class 4: I 1, U 1 -> 100
#   mIoU = 350 / 5 = 70, aAcc = 4 / 5 = 80, mAcc = (100 + 100 + 50 + 100) / 4 = 87.5 (class 3 has no label)
# Counting the ignored pixels as predictions of class 2 would give class 2 U = 5, IoU 20, mIoU 64.
LABEL = [[0, 1, 5, 5], [2, 2, 5, 4]]
PRED = [[0, 1, 2, 2], [2, 3, 2, 4]]


def sample(label, pred, dtype):
    return SegDataSample(
        {"img_id": "hand"},
        gt_sem_seg=PixelData(torch.tensor(label, dtype=dtype)[None]),
        pred_sem_seg=PixelData(torch.tensor(pred, dtype=dtype)[None]),
    )


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_ignore_index_equal_to_num_classes(dtype):
    metric = IoUMetric(num_classes=5, ignore_index=5)
    metric.process([sample(LABEL, PRED, dtype)])
    areas = metric.total_areas()
    np.testing.assert_array_equal(areas["intersect"], [1, 1, 1, 0, 1])
    np.testing.assert_array_equal(areas["pred"], [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(areas["label"], [1, 1, 2, 0, 1])
    assert metric.compute() == {"aAcc": 80.0, "mIoU": 70.0, "mAcc": 87.5}
    np.testing.assert_allclose(metric.per_class["IoU"], [100, 100, 50, 0, 100])


def test_the_torch_path_agrees():
    """A label value far past the classes (1000: "other", counted only as a prediction) sends the
    sample through the torch bincount instead of the CPU histogram: the same figures. The new column
    is (1000, pred 3) and one more ignored pixel (5, pred 0)."""
    label = [LABEL[0] + [1000], LABEL[1] + [5]]
    pred = [PRED[0] + [3], PRED[1] + [0]]
    metric = IoUMetric(num_classes=5, ignore_index=5)
    metric.process([sample(label, pred, torch.int64)])
    np.testing.assert_array_equal(metric.total_areas()["pred"], [1, 1, 1, 2, 1])  # the "other" pixel
    assert metric.compute() == {"aAcc": 80.0, "mIoU": 70.0, "mAcc": 87.5}
