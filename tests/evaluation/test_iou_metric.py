"""IoUMetric against hand-worked examples and an independent numpy reference (MMSegmentation's formulas)."""

import math

import numpy as np
import pytest
import torch

from segaccel.evaluation import IoUMetric
from segaccel.registry import METRICS
from segaccel.structures import PixelData, SegDataSample


def sample(label, pred, img_id="img") -> SegDataSample:
    return SegDataSample(
        {"img_id": img_id},
        gt_sem_seg=PixelData(torch.as_tensor(label)),
        pred_sem_seg=PixelData(torch.as_tensor(pred)),
    )


# Worked by hand (3 classes, 255 = ignore):
#   label = [[0, 1, 2],      pred = [[0, 1, 1],
#            [1, 1, 255]]            [1, 2, 0]]
# The ignored pixel drops out; the 5 others are (label, pred) = (0,0) (1,1) (2,1) (1,1) (1,2).
#   class 0: intersect 1, pred area 1, label area 1, union 1 -> IoU 1,   Acc 1,   Dice 2/2 = 1
#   class 1: intersect 2, pred area 3, label area 3, union 4 -> IoU 1/2, Acc 2/3, Dice 4/6 = 2/3
#   class 2: intersect 0, pred area 1, label area 1, union 2 -> IoU 0,   Acc 0,   Dice 0
#   aAcc = 3/5 = 60 %, mIoU = 50 %, mAcc = (1 + 2/3 + 0)/3 = 55.555... -> 55.56, mDice = 55.56
HAND_LABEL = [[0, 1, 2], [1, 1, 255]]
HAND_PRED = [[0, 1, 1], [1, 2, 0]]


def test_hand_worked_example():
    metric = IoUMetric(num_classes=3, iou_metrics=("mIoU", "mDice"), class_names=["sky", "road", "car"])
    metric.process([sample(HAND_LABEL, HAND_PRED)])

    np.testing.assert_array_equal(metric.confusion_matrix, [[1, 0, 0], [0, 2, 1], [0, 1, 0]])
    assert metric.confusion_matrix.dtype == np.int64
    assert metric.compute() == {"aAcc": 60.0, "mIoU": 50.0, "mAcc": 55.56, "mDice": 55.56}
    np.testing.assert_allclose(metric.per_class["IoU"], [100, 50, 0])
    np.testing.assert_allclose(metric.per_class["Acc"], [100, 200 / 3, 0])
    np.testing.assert_allclose(metric.per_class["Dice"], [100, 200 / 3, 0])
    assert metric.per_class["IoU"].dtype == np.float64
    assert metric.summary_unrounded["mAcc"] == pytest.approx(500 / 9)


def test_ignored_pixels_count_nowhere():
    metric = IoUMetric(num_classes=2)
    # Every wrong pixel is ignored, so only the two correct ones remain.
    metric.process([sample([[0, 255, 1], [255, 255, 255]], [[0, 1, 1], [0, 1, 0]])])
    assert metric.confusion_matrix.sum() == 2
    assert metric.compute() == {"aAcc": 100.0, "mIoU": 100.0, "mAcc": 100.0}


def test_custom_ignore_index():
    metric = IoUMetric(num_classes=3, ignore_index=2)
    metric.process([sample([[0, 2], [1, 1]], [[0, 1], [1, 0]])])
    # Left: (0,0) (1,1) (1,0). class 0: I 1, U 2; class 1: I 1, U 2; class 2 absent -> NaN.
    assert metric.compute() == {"aAcc": pytest.approx(200 / 3, abs=0.005), "mIoU": 50.0, "mAcc": 75.0}
    assert math.isnan(metric.per_class["IoU"][2])


def test_class_absent_from_both_is_nan_and_left_out_of_the_mean():
    metric = IoUMetric(num_classes=4)  # class 3 appears in neither labels nor predictions
    metric.process([sample(HAND_LABEL, HAND_PRED)])
    result = metric.compute()
    assert math.isnan(metric.per_class["IoU"][3]) and math.isnan(metric.per_class["Acc"][3])
    assert result == {"aAcc": 60.0, "mIoU": 50.0, "mAcc": 55.56}


def test_nan_to_num_counts_absent_class_in_the_mean():
    metric = IoUMetric(num_classes=4, nan_to_num=0)
    metric.process([sample(HAND_LABEL, HAND_PRED)])
    # mIoU = (1 + 1/2 + 0 + 0)/4 = 37.5 %; mAcc = (1 + 2/3 + 0 + 0)/4 = 41.666... %
    assert metric.compute() == {"aAcc": 60.0, "mIoU": 37.5, "mAcc": 41.67}
    assert metric.per_class["IoU"][3] == 0.0


def test_prediction_out_of_range_counts_in_no_class_but_its_label_does():
    metric = IoUMetric(num_classes=3)
    # Pixel 2 is predicted 7 and pixel 3 is predicted -1: both are misses of class 1, and class 1
    # gets no prediction area from them (as MMSegmentation's histogram over [0, C)).
    metric.process([sample([[0, 1, 1]], [[0, 7, -1]])])
    np.testing.assert_array_equal(metric.confusion_matrix, [[1, 0, 0], [0, 0, 0], [0, 0, 0]])
    result = metric.compute()
    np.testing.assert_allclose(metric.per_class["IoU"][:2], [100, 0])  # class 1: I 0, U = 0 + 2 - 0
    assert math.isnan(metric.per_class["IoU"][2])
    assert result == {"aAcc": pytest.approx(33.33), "mIoU": 50.0, "mAcc": 50.0}


def test_label_out_of_range_still_counts_its_prediction():
    metric = IoUMetric(num_classes=2)
    # Label 9 is neither a class nor ignore_index: its prediction (1) adds to class 1's pred area.
    metric.process([sample([[0, 9]], [[0, 1]])])
    metric.compute()
    np.testing.assert_allclose(metric.per_class["IoU"], [100, 0])
    assert math.isnan(metric.per_class["Acc"][1])  # no label of class 1: 0/0
    assert metric.summary_unrounded["aAcc"] == 100.0


def test_inputs_are_left_unchanged_and_narrow_dtypes_work():
    label = torch.tensor([[0, 1, 255], [2, 9, 1]], dtype=torch.int16)
    pred = torch.tensor([[0, 1, 1], [-3, 2, 40]], dtype=torch.int16)
    metric = IoUMetric(num_classes=3)
    one = sample(label.clone(), pred.clone())
    metric.process([one])
    assert torch.equal(one.gt_sem_seg.data[0], label) and torch.equal(one.pred_sem_seg.data[0], pred)
    # (0,0) (1,1) (2,out) (out,2) (1,out): class 0 IoU 1; class 1: I 1, U 2; class 2: I 0, U 2
    metric.compute()
    np.testing.assert_allclose(metric.per_class["IoU"], [100, 50, 0])


def test_negative_ignore_index_with_uint8_labels():
    metric = IoUMetric(num_classes=2, ignore_index=-1)
    label = torch.tensor([[0, 255]], dtype=torch.uint8)  # 255 is an out-of-range label here, not ignored
    metric.process([sample(label, torch.tensor([[0, 1]], dtype=torch.uint8))])
    metric.compute()
    np.testing.assert_array_equal(metric.per_class["IoU"], [100, 0])  # class 1 was predicted: not NaN


def test_images_are_summed_not_averaged():
    # Image A: 4 pixels of class 0, all right. Image B: label [0, 1], pred [1, 1].
    #   summed: class 0: I 4, U 5 -> 0.8; class 1: I 1, U 2 -> 0.5; mIoU = 65 %
    #   per-image averaging would give (mean(1) + mean(0, 0.5)) / 2 = 62.5 %.
    a = sample([[0, 0], [0, 0]], [[0, 0], [0, 0]], "a")
    b = sample([[0, 1]], [[1, 1]], "b")
    together, apart = IoUMetric(num_classes=2), IoUMetric(num_classes=2)
    together.process([a, b])
    apart.process([a])
    apart.process([b])
    assert together.compute() == apart.compute() == {"aAcc": pytest.approx(83.33), "mIoU": 65.0, "mAcc": 90.0}


def test_reset_forgets_everything():
    metric = IoUMetric(num_classes=3)
    metric.process([sample(HAND_LABEL, HAND_PRED)])
    metric.reset()
    assert metric.confusion_matrix.sum() == 0
    metric.process([sample([[0, 1]], [[0, 1]])])
    assert metric.compute()["mIoU"] == 100.0


# Fscore example: label = [[0, 0, 0], [1, 1, 1]], pred = [[0, 0, 1], [1, 0, 0]]
#   class 0: I 2, P 4, L 3 -> precision 1/2, recall 2/3
#            F1 = 2 * (1/3) / (1/2 + 2/3) = 4/7;  F2 = 5 * (1/3) / (4 * 1/2 + 2/3) = 5/8
#   class 1: I 1, P 2, L 3 -> precision 1/2, recall 1/3
#            F1 = 2 * (1/6) / (1/2 + 1/3) = 2/5;  F2 = 5 * (1/6) / (2 + 1/3) = 5/14
F_LABEL = [[0, 0, 0], [1, 1, 1]]
F_PRED = [[0, 0, 1], [1, 0, 0]]


def test_dice_fscore_precision_recall_beta_1():
    metric = IoUMetric(num_classes=2, iou_metrics=("mIoU", "mDice", "mFscore"))
    metric.process([sample(F_LABEL, F_PRED)])
    result = metric.compute()
    assert list(result) == ["aAcc", "mIoU", "mAcc", "mDice", "mFscore", "mPrecision", "mRecall"]
    np.testing.assert_allclose(metric.per_class["Fscore"], [400 / 7, 40])
    np.testing.assert_allclose(metric.per_class["Dice"], [400 / 7, 40])  # Dice is F1
    np.testing.assert_allclose(metric.per_class["Precision"], [50, 50])
    np.testing.assert_allclose(metric.per_class["Recall"], [200 / 3, 100 / 3])
    # mFscore = (4/7 + 2/5) / 2 = 34/70 = 48.571...
    assert result["mFscore"] == result["mDice"] == 48.57
    assert result["mPrecision"] == 50.0 and result["mRecall"] == 50.0
    assert result["aAcc"] == 50.0


def test_fscore_beta_2():
    metric = IoUMetric(num_classes=2, iou_metrics=["mFscore"], beta=2)
    metric.process([sample(F_LABEL, F_PRED)])
    result = metric.compute()
    np.testing.assert_allclose(metric.per_class["Fscore"], [62.5, 500 / 14])
    assert result["mFscore"] == 49.11  # (5/8 + 5/14) / 2 = 55/112
    assert list(result) == ["aAcc", "mFscore", "mPrecision", "mRecall"]


def reference_metrics(labels, preds, num_classes, ignore_index, metrics, nan_to_num=None, beta=1):
    """Per-image histograms as `evaluate`'s mean_iou / mmseg's intersect_and_union, summed, then
    mmseg's total_area_to_metrics; written from the published formulas, independently of IoUMetric."""
    total = np.zeros((4, num_classes), dtype=np.int64)  # intersect, union, pred, label
    for label, pred in zip(labels, preds):
        mask = label != ignore_index
        pred, label = pred[mask], label[mask]
        intersect = pred[pred == label]
        hist = [
            np.histogram(x, bins=num_classes, range=(0, num_classes - 1))[0] for x in (intersect, pred, label)
        ]
        total += np.stack([hist[0], hist[1] + hist[2] - hist[0], hist[1], hist[2]])
    i, u, p, lab = total.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"aAcc": np.asarray(i.sum() / lab.sum())}
        if "mIoU" in metrics:
            out["IoU"], out["Acc"] = i / u, i / lab
        if "mDice" in metrics:
            out["Dice"], out["Acc"] = 2 * i / (p + lab), i / lab
        if "mFscore" in metrics:
            prec, rec = i / p, i / lab
            out["Fscore"] = (1 + beta**2) * (prec * rec) / ((beta**2 * prec) + rec)
            out["Precision"], out["Recall"] = prec, rec
    if nan_to_num is not None:
        out = {k: np.nan_to_num(v, nan=nan_to_num) for k, v in out.items()}
    unrounded = {(k if k == "aAcc" else "m" + k): np.nanmean(v) * 100 for k, v in out.items()}
    return unrounded, {k: v * 100 for k, v in out.items() if k != "aAcc"}


@pytest.mark.parametrize(
    "num_classes, nan_to_num, beta, dtype",
    [
        (5, None, 1, torch.int64),
        (7, 0, 2, torch.uint8),
        (180, None, 1, torch.int64),
        (300, None, 0.5, torch.int32),
    ],
)
def test_random_data_matches_numpy_reference(num_classes, nan_to_num, beta, dtype):
    rng = np.random.default_rng(num_classes)
    metrics = ("mIoU", "mDice", "mFscore")
    metric = IoUMetric(num_classes=num_classes, iou_metrics=metrics, nan_to_num=nan_to_num, beta=beta)
    labels, preds = [], []
    for batch in range(3):
        samples = []
        for k in range(2):
            h, w = rng.integers(5, 40, size=2)
            # The last class is in neither labels nor predictions, the one before only in predictions;
            # predictions agree with labels on about 60 % of the pixels.
            label = rng.integers(0, num_classes - 2, size=(h, w))
            pred = np.where(rng.random((h, w)) < 0.6, label, rng.integers(0, num_classes - 1, size=(h, w)))
            label[rng.random((h, w)) < 0.1] = 255
            if dtype != torch.uint8:
                pred[rng.random((h, w)) < 0.02] = num_classes + 3  # out of range
            labels.append(label)
            preds.append(pred)
            samples.append(
                sample(torch.as_tensor(label).to(dtype), torch.as_tensor(pred).to(dtype), f"{batch}-{k}")
            )
        metric.process(samples)

    unrounded, per_class = reference_metrics(labels, preds, num_classes, 255, metrics, nan_to_num, beta)
    assert metric.compute() == {k: float(np.round(v, 2)) for k, v in unrounded.items()}  # reported: exact
    assert metric.summary_unrounded == pytest.approx(unrounded, rel=1e-6)
    assert metric.per_class.keys() == per_class.keys()
    for key, values in per_class.items():
        np.testing.assert_allclose(metric.per_class[key], values, rtol=1e-6, atol=1e-9, equal_nan=True)
    assert np.isnan(per_class["IoU"][-1]) == (nan_to_num is None)
    assert np.isnan(per_class["Acc"][-2]) == (nan_to_num is None)


def test_all_reduce_sums_states_of_two_metrics():
    rng = np.random.default_rng(0)
    samples = [sample(rng.integers(0, 4, (6, 9)), rng.integers(0, 4, (6, 9)), str(k)) for k in range(6)]
    one, first, second = IoUMetric(4), IoUMetric(4), IoUMetric(4)
    one.process(samples)
    first.process(samples[:2])
    second.process(samples[2:5])
    second.process(samples[5:])

    seen = []

    def keep(state):
        seen.append(state.clone())
        return state

    second.all_reduce_(keep)  # a reduce that changes nothing, to read the other "process"'s state
    first.all_reduce_(lambda state: state + seen[0])  # what accelerate's sum-reduce does on 2 processes
    np.testing.assert_array_equal(first.confusion_matrix, one.confusion_matrix)
    assert first.compute() == one.compute()
    np.testing.assert_array_equal(first.per_class["IoU"], one.per_class["IoU"])


def test_all_reduce_on_a_process_that_saw_no_sample():
    busy, idle = IoUMetric(3), IoUMetric(3)
    busy.process([sample(HAND_LABEL, HAND_PRED)])
    states = []
    busy.all_reduce_(lambda s: states.append(s) or s)
    idle.all_reduce_(lambda s: s + states[0], device="cpu")
    assert idle.compute() == {"aAcc": 60.0, "mIoU": 50.0, "mAcc": 55.56}


def test_all_reduce_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        IoUMetric(3).all_reduce_(lambda s: s.sum())


def test_results_table_lists_every_class():
    names = ["background", "person", "bicycle", "unused"]
    metric = IoUMetric(num_classes=4, iou_metrics=("mIoU", "mDice"), class_names=names)
    metric.process([sample(HAND_LABEL, HAND_PRED)])
    with pytest.raises(RuntimeError, match="compute"):
        metric.results_table()
    metric.compute()
    table = metric.results_table()
    lines = table.splitlines()
    assert [h.strip() for h in lines[1].strip("|").split("|")] == ["Class", "IoU", "Acc", "Dice"]
    rows = {
        cells[0]: cells[1:] for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines[3:-1])
    }
    assert list(rows) == names
    assert rows["person"] == ["50.00", "66.67", "66.67"]
    assert rows["unused"] == ["nan", "nan", "nan"]


def test_mismatched_shapes_name_the_sample():
    metric = IoUMetric(num_classes=3)
    bad = sample(
        torch.zeros(1, 4, 5, dtype=torch.int64), torch.zeros(1, 5, 4, dtype=torch.int64), "frame_0042"
    )
    with pytest.raises(ValueError, match=r"frame_0042.*\(1, 5, 4\).*\(1, 4, 5\)"):
        metric.process([sample(HAND_LABEL, HAND_PRED), bad])
    assert metric.confusion_matrix.sum() == 0  # a failed batch adds nothing


def test_missing_label_and_float_prediction_are_clear_errors():
    metric = IoUMetric(num_classes=3)
    no_label = SegDataSample({"img_id": "x1"}, pred_sem_seg=PixelData(torch.zeros(2, 2, dtype=torch.int64)))
    with pytest.raises(ValueError, match="x1.*gt_sem_seg"):
        metric.process([no_label])
    with pytest.raises(TypeError, match="x2.*pred_sem_seg.*integer"):
        metric.process([sample(torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 2), "x2")])


def test_constructor_checks_and_registry():
    with pytest.raises(ValueError, match="mAP"):
        IoUMetric(3, iou_metrics=("mIoU", "mAP"))
    with pytest.raises(ValueError, match="2 class_names"):
        IoUMetric(3, class_names=["a", "b"])
    assert IoUMetric(3, iou_metrics="mDice").iou_metrics == ("mDice",)
    built = METRICS.build({"type": "IoUMetric", "iou_metrics": ["mIoU", "mFscore"]}, num_classes=6)
    assert isinstance(built, IoUMetric) and built.num_classes == 6
    assert built.confusion_matrix.shape == (6, 6)


def test_empty_metric_computes_nan():
    result = IoUMetric(2).compute()
    assert all(math.isnan(v) for v in result.values())


def reference_areas(labels, preds, num_classes, ignore_index):
    """mmseg's intersect_and_union summed over images (np.histogram over [0, C - 1]), as int64 (4, C)."""
    total = np.zeros((4, num_classes), dtype=np.int64)
    for label, pred in zip(labels, preds):
        label, pred = np.asarray(label, dtype=np.int64), np.asarray(pred, dtype=np.int64)
        mask = label != ignore_index
        pred, label = pred[mask], label[mask]
        hist = [
            np.histogram(x, bins=num_classes, range=(0, num_classes - 1))[0]
            for x in (pred[pred == label], pred, label)
        ]
        total += np.stack([hist[0], hist[1] + hist[2] - hist[0], hist[1], hist[2]])
    return total


def areas_of(metric):
    return np.stack([metric.total_areas()[k] for k in ("intersect", "union", "pred", "label")])


@pytest.mark.parametrize(
    "dtype, ignore_index",
    [
        (torch.int64, 255),
        (torch.int32, 255),
        (torch.int16, 255),
        (torch.int8, 100),
        (torch.uint8, 255),
        (torch.int64, 1),  # ignore_index is a class index
        (torch.int64, -1),  # negative ignore_index
        (torch.int64, 70_000),  # a wide CPU histogram (70 001 label rows)
        (torch.int64, 1_000_000),  # too wide for the CPU histogram: the torch path
    ],
)
def test_every_value_range_and_dtype_counts_like_the_reference(dtype, ignore_index):
    """The CPU fast path (narrow index + folded histogram) and the exact torch path give mmseg's areas,
    for labels between C and ignore_index, above it, negative, and predictions out of range."""
    num_classes = 5
    info = torch.iinfo(dtype)
    rng = np.random.default_rng(7)
    specials = [
        v for v in (ignore_index, 6, 9, 120, 254, 300, -1, -7, 90_000, 2_000_000) if info.min <= v <= info.max
    ]
    labels, preds, samples = [], [], []
    for k in range(6):
        h, w = 7 + k, 9
        label = rng.integers(0, num_classes, (h, w))
        pred = rng.integers(0, num_classes, (h, w))
        if k % 2:  # every other image has odd values; the others take the fast path
            label.flat[rng.choice(h * w, 8, replace=False)] = rng.choice(specials, 8)
            pred.flat[rng.choice(h * w, 4, replace=False)] = rng.choice(
                [v for v in (num_classes, 7, 200, -1, -3) if info.min <= v <= info.max], 4
            )
        elif ignore_index in specials:
            label[0, :3] = ignore_index
        labels.append(label)
        preds.append(pred)
        samples.append(sample(torch.as_tensor(label).to(dtype), torch.as_tensor(pred).to(dtype), str(k)))
    metric = IoUMetric(num_classes=num_classes, ignore_index=ignore_index)
    metric.process(samples[:4])
    metric.process(samples[4:])
    np.testing.assert_array_equal(areas_of(metric), reference_areas(labels, preds, num_classes, ignore_index))


def test_signed_byte_minus_one_is_not_read_as_255():
    metric = IoUMetric(num_classes=2)  # ignore_index 255
    label = torch.tensor([[0, -1]], dtype=torch.int8)  # -1 is an out-of-range label, not ignore
    metric.process([sample(label, torch.tensor([[0, 1]], dtype=torch.int8))])
    assert metric.total_areas()["pred"].tolist() == [1, 1]


def test_state_size_does_not_grow_with_the_dataset():
    """The state is one (C + 1) x (C + 1) int64 matrix, whatever the number of images; the only other
    buffer is the CPU path's scratch index, sized by the largest image seen."""
    metric = IoUMetric(num_classes=150)
    rng = np.random.default_rng(0)
    state_bytes = []
    for batch in range(20):
        labels = rng.integers(0, 150, (4, 1, 32, 48))
        metric.process(
            [sample(torch.as_tensor(label), torch.as_tensor(label), f"{batch}") for label in labels]
        )
        state_bytes.append(metric._state.numel() * metric._state.element_size())
    assert state_bytes == [151 * 151 * 8] * 20
    assert metric._state.shape == (151, 151)
    assert metric._scratch.shape == (2, 32 * 48)
    assert metric.confusion_matrix.sum() == 20 * 4 * 32 * 48
