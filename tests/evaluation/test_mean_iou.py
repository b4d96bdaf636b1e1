"""`MeanIoU`, the `evaluate.EvaluationModule` adapter: offline, evaluate's mean_iou API and formulas."""

import math
import warnings

import numpy as np
import pytest
import torch

evaluate = pytest.importorskip("evaluate")

from segaccel.evaluation import IoUMetric, MeanIoU  # noqa: E402
from segaccel.structures import PixelData, SegDataSample  # noqa: E402


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No Hub access anywhere in these tests."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def reference_mean_iou(
    preds, refs, num_labels, ignore_index, nan_to_num=None, label_map=None, reduce_labels=False
):
    """evaluate's published mean_iou formulas (intersect_and_union per image, summed), written out here."""
    total = np.zeros((4, num_labels), dtype=np.float64)
    for pred, label in zip(preds, refs):
        pred, label = np.array(pred), np.array(label)
        if label_map is not None:
            for old_id, new_id in label_map.items():
                label[label == old_id] = new_id
        if reduce_labels:
            label[label == 0] = 255
            label = label - 1
            label[label == 254] = 255
        mask = label != ignore_index
        pred, label = pred[mask], label[mask]
        hist = [
            np.histogram(x, bins=num_labels, range=(0, num_labels - 1))[0]
            for x in (pred[pred == label], pred, label)
        ]
        total += np.stack([hist[0], hist[1] + hist[2] - hist[0], hist[1], hist[2]])
    intersect, union, _, area_label = total
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        iou, acc = intersect / union, intersect / area_label
        out = {
            "mean_iou": np.nanmean(iou),
            "mean_accuracy": np.nanmean(acc),
            "overall_accuracy": intersect.sum() / area_label.sum(),
            "per_category_iou": iou,
            "per_category_accuracy": acc,
        }
    if nan_to_num is not None:
        out = {k: np.nan_to_num(v, nan=nan_to_num) for k, v in out.items()}
    return out


def test_is_an_evaluation_module_built_locally(tmp_path):
    metric = MeanIoU(cache_dir=str(tmp_path))
    assert isinstance(metric, evaluate.EvaluationModule)
    assert set(metric.features) == {"predictions", "references"}
    assert "num_labels" in metric.inputs_description


def test_hand_worked_example_with_add_batch(tmp_path):
    # test_iou_metric's example: 3 classes, one ignored pixel; class 3 absent -> NaN, out of the means
    metric = MeanIoU(cache_dir=str(tmp_path))
    metric.add_batch(
        predictions=[np.array([[0, 1, 1], [1, 2, 0]])], references=[np.array([[0, 1, 2], [1, 1, 255]])]
    )
    result = metric.compute(num_labels=4, ignore_index=255)
    assert set(result) == {
        "mean_iou",
        "mean_accuracy",
        "overall_accuracy",
        "per_category_iou",
        "per_category_accuracy",
    }
    assert result["mean_iou"] == 0.5
    assert result["mean_accuracy"] == pytest.approx(5 / 9, abs=1e-15)
    assert result["overall_accuracy"] == 0.6
    np.testing.assert_array_equal(result["per_category_iou"][:3], [1, 0.5, 0])
    assert math.isnan(result["per_category_iou"][3])


def test_nan_to_num_replaces_after_averaging_as_evaluate_does(tmp_path):
    metric = MeanIoU(keep_in_memory=True)
    result = metric.compute(
        predictions=[[[0, 1, 1], [1, 2, 0]]],
        references=[[[0, 1, 2], [1, 1, 255]]],
        num_labels=4,
        nan_to_num=-1,
    )
    assert result["mean_iou"] == 0.5  # NaN classes stay out of the mean (IoUMetric would give 0.375 with 0)
    assert result["per_category_iou"][3] == -1


@pytest.mark.parametrize("reduce_labels, label_map", [(False, None), (True, None), (False, {3: 0, 0: 3})])
def test_random_batches_match_evaluate_formulas_and_iou_metric(tmp_path, reduce_labels, label_map):
    num_labels = 6
    rng = np.random.default_rng(11)
    preds, refs = [], []
    metric = MeanIoU(cache_dir=str(tmp_path), experiment_id=f"t{reduce_labels}{label_map}")
    for _ in range(3):
        batch_p, batch_r = [], []
        for _ in range(2):
            h, w = rng.integers(4, 20, size=2)
            ref = rng.integers(0, num_labels - 1, (h, w))  # the last class never in the labels
            pred = np.where(rng.random((h, w)) < 0.6, ref, rng.integers(0, num_labels, (h, w)))
            ref[rng.random((h, w)) < 0.1] = 255
            pred[rng.random((h, w)) < 0.03] = num_labels + 2  # out of range: no class
            batch_p.append(pred)
            batch_r.append(ref)
        preds += batch_p
        refs += batch_r
        # tensors, arrays and lists are all accepted
        metric.add_batch(
            predictions=[torch.as_tensor(p) for p in batch_p], references=[r.tolist() for r in batch_r]
        )
    kwargs = dict(num_labels=num_labels, ignore_index=255, reduce_labels=reduce_labels, label_map=label_map)
    result = metric.compute(**kwargs)
    expected = reference_mean_iou(preds, refs, **kwargs)
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_allclose(result[key], value, rtol=1e-12, equal_nan=True)

    if not reduce_labels and label_map is None:  # the same numbers as IoUMetric's (in percent there)
        iou_metric = IoUMetric(num_classes=num_labels)
        iou_metric.process(
            [
                SegDataSample(
                    gt_sem_seg=PixelData(torch.as_tensor(r)), pred_sem_seg=PixelData(torch.as_tensor(p))
                )
                for p, r in zip(preds, refs)
            ]
        )
        summary = iou_metric.compute()
        assert summary["mIoU"] == round(result["mean_iou"] * 100, 2)
        assert summary["aAcc"] == round(result["overall_accuracy"] * 100, 2)
        np.testing.assert_allclose(iou_metric.per_class["IoU"], result["per_category_iou"] * 100, rtol=1e-12)


def test_bad_input_is_a_clear_error():
    metric = MeanIoU(keep_in_memory=True)
    with pytest.raises(ValueError, match=r"references\[0\].*\(1, 2, 3\).*\(1, 2, 2\)"):
        metric.compute(predictions=[[[0, 1, 1], [0, 0, 1]]], references=[[[0, 0], [0, 0]]], num_labels=2)
