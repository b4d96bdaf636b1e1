"""What scripts/test.py writes: metrics.json (strict JSON), label PNGs (optionally in the dataset's ids),
overlays, confusion matrix."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from segaccel.engine.test_outputs import (
    OverlayWriter,
    PredictionWriter,
    normalized_confusion_matrix,
    output_name,
    save_label_png,
    to_original_ids,
    write_confusion_matrix,
    write_metrics_json,
    write_test_results,
)
from segaccel.structures import PixelData, SegDataSample
from segaccel.visualization import TITLE_HEIGHT


def test_original_ids_undo_reduce_zero_label_and_label_map():
    pred = np.array([[0, 1, 2], [3, 1, 0]])
    np.testing.assert_array_equal(to_original_ids(pred, reduce_zero_label=True), pred + 1)
    # The dataset maps stored ids (after reduce_zero_label) old -> new: {5: 1, 1: 5, 7: 2, 8: 2}.
    label_map = {5: 1, 1: 5, 7: 2, 8: 2}
    out = to_original_ids(np.array([[1, 5, 2, 0]]), label_map=label_map)
    np.testing.assert_array_equal(out, [[5, 1, 7, 0]])  # 2 had two sources: the smallest (7) is taken
    # both: label_map undone first, then +1, the inverse of the dataset's order
    np.testing.assert_array_equal(to_original_ids(np.array([[1, 3]]), True, {4: 1}), [[5, 4]])


def test_label_png_is_8_bit_or_16_bit_and_round_trips(tmp_path):
    small = np.array([[0, 3], [255, 7]])
    save_label_png(small, tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), small)
    large = np.array([[0, 300], [65535, 150]])
    save_label_png(large, tmp_path / "b.png")
    with Image.open(tmp_path / "b.png") as img:
        assert img.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(img), large)
    with pytest.raises(ValueError, match="65535"):
        save_label_png(np.array([[-1]]), tmp_path / "c.png")


def sample(pred, img_id="validation/3", img_path=None, gt=None):
    s = SegDataSample({"img_id": img_id, "img_path": img_path}, pred_sem_seg=PixelData(torch.as_tensor(pred)))
    if gt is not None:
        s.gt_sem_seg = PixelData(torch.as_tensor(gt))
    return s


def test_output_names():
    assert output_name(sample([[0]], img_path="/data/ADE_val_00000001.jpg"), 0) == "ADE_val_00000001"
    assert output_name(sample([[0]]), 17) == "000017"
    assert output_name(sample([[0]]), None) == "validation_3"


def test_prediction_writer_writes_each_sample_once_in_original_ids(tmp_path):
    writer = PredictionWriter(tmp_path / "preds", original_ids=True, reduce_zero_label=True)
    preds = [np.array([[0, 1], [2, 0]]), np.array([[1, 1, 1]])]
    writer.process({}, [sample(p) for p in preds], [4, 9])
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == ["000004.png", "000009.png"]
    with Image.open(tmp_path / "preds" / "000004.png") as img:
        np.testing.assert_array_equal(np.asarray(img), preds[0] + 1)


def test_overlay_writer_uses_the_original_image_and_enlarges_small_ones(tmp_path):
    class Dataset:
        def load_results(self, index):
            return {"img": np.full((8, 12, 3), index, dtype=np.uint8)}

    writer = OverlayWriter(
        tmp_path / "vis", [[255, 0, 0], [0, 255, 0]], ["a", "b"], dataset=Dataset(), min_height=32
    )
    pred, gt = np.zeros((8, 12), dtype=np.int64), np.ones((8, 12), dtype=np.int64)
    batch = {"inputs": [torch.zeros(3, 16, 24, dtype=torch.uint8)]}
    writer.process(batch, [sample(pred, gt=gt)], [2])
    with Image.open(tmp_path / "vis" / "000002.png") as img:
        # image | ground truth | prediction | errors, each 12 x 4 = 48 wide (enlarged 4x to reach 32 high)
        pixels = np.asarray(img)
        assert img.width >= 4 * 48 and img.height > TITLE_HEIGHT + 32
        assert pixels[TITLE_HEIGHT, 0].tolist() == [2, 2, 2]  # the dataset's image, not the input
        errors = pixels[TITLE_HEIGHT : TITLE_HEIGHT + 32, 3 * 48 : 4 * 48]
        assert (errors == [255, 0, 0]).all()  # every labelled pixel is wrong (gt 1, prediction 0)
    # no index (a streamed dataset): the model's input resized to ori_shape
    writer.process(batch, [sample(pred, gt=gt, img_id="s/0.0.0.5")], [None])
    assert (tmp_path / "vis" / "s_0.0.0.5.png").is_file()


def test_confusion_matrix_files(tmp_path):
    matrix = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    normalized = normalized_confusion_matrix(matrix)
    np.testing.assert_allclose(normalized[:2], [[0.8, 0.2, 0], [0.25, 0.75, 0]])
    assert np.isnan(normalized[2]).all()  # no pixel of that class
    csv_path, counts_path, png_path = write_confusion_matrix(matrix, ["sky", "road", "car"], tmp_path)
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ground truth \\ prediction", "sky", "road", "car"]
    assert rows[1] == ["sky", "0.800000", "0.200000", "0.000000"]
    assert rows[3] == ["car", "", "", ""]
    with open(counts_path, newline="") as f:
        assert [r[1:] for r in csv.reader(f)][1:] == [["8", "2", "0"], ["1", "3", "0"], ["0", "0", "0"]]
    with Image.open(png_path) as img:
        assert img.mode == "RGB" and img.height > 3 * 40
    # 150 classes: small cells, no names, still one image
    write_confusion_matrix(np.eye(150, dtype=np.int64), [str(i) for i in range(150)], tmp_path / "big")
    with Image.open(tmp_path / "big" / "confusion_matrix.png") as img:
        assert 150 * 5 <= img.height <= 900


def strict_json(text: str):
    """`json.loads` that refuses the bare `NaN`/`Infinity` Python's json module writes by default."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_metrics_json_writes_null_for_nan_and_infinity(tmp_path):
    with pytest.raises(ValueError, match="not JSON: NaN"):  # the parser below is really strict
        strict_json(json.dumps({"mIoU": float("nan")}))
    metrics = {
        "aAcc": 91.25,
        "mIoU": float("nan"),
        "mDice": np.float32("nan"),
        "mFscore": float("inf"),
        "mAcc": np.float64(80.5),
        "steps": np.int64(3),
    }
    per_class = {"IoU": {"sky": 12.5, "car": None}, "Acc": {"sky": np.float32(50.0), "car": float("-inf")}}
    path = write_metrics_json(tmp_path / "metrics.json", metrics, per_class)
    assert strict_json(path.read_text()) == {
        "aAcc": 91.25,
        "mIoU": None,
        "mDice": None,
        "mFscore": None,
        "mAcc": 80.5,
        "steps": 3,
        "per_class": {"IoU": {"sky": 12.5, "car": None}, "Acc": {"sky": 50.0, "car": None}},
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary file left
    write_metrics_json(path, {"mIoU": 1.5})  # replaced; without per_class there is no per_class key
    assert strict_json(path.read_text()) == {"mIoU": 1.5}


def test_test_results_hold_the_per_class_table_with_null_for_absent_classes(tmp_path):
    class Evaluator:  # what IoUMetric holds after compute(): per-class figures, NaN for an absent class
        class_names = ["sky", "road", "car"]
        per_class = {"IoU": np.array([100 / 3, 50.0, np.nan]), "Acc": np.array([80.0, 62.5, np.nan])}
        confusion_matrix = np.array([[4, 1, 0], [2, 2, 0], [0, 0, 0]])

    summary = {"aAcc": 75.0, "mIoU": 41.67}
    path = write_test_results(tmp_path / "work", summary, Evaluator(), confusion_matrix=True)
    assert strict_json(path.read_text()) == {
        "aAcc": 75.0,
        "mIoU": 41.67,
        "per_class": {
            "IoU": {"sky": 33.33, "road": 50.0, "car": None},
            "Acc": {"sky": 80.0, "road": 62.5, "car": None},
        },
    }
    assert (tmp_path / "work" / "confusion_matrix.csv").is_file()
