"""Validation/test batches of images of different sizes: padded by the preprocessor, cropped back per image.

MMSegmentation refuses batch > 1 at validation; here the test loop pads a mixed-size batch and
every prediction is cropped back and resized to its own image, so the metric sees each original
pixel exactly once and never a padded one.
"""

import datasets
import numpy as np
import pytest
from engine_helpers import reset_accelerate
from evaluation_helpers import pointwise_segmentor, tiny_segformer
from PIL import Image

from segaccel.engine.runner import Runner

SIZES = [(20, 28), (32, 17), (9, 30), (32, 32), (15, 15)]


@pytest.fixture(scope="module")
def mixed_size_dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    images, labels = [], []
    for h, w in SIZES:
        images.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
        label = rng.integers(0, 3, (h, w), dtype=np.uint8)
        label[rng.random((h, w)) < 0.1] = 255
        labels.append(Image.fromarray(label, mode="L"))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    folder = tmp_path_factory.mktemp("mixed") / "data"
    split = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    datasets.DatasetDict({"validation": split}).save_to_disk(str(folder))
    return folder


def labelled_pixels(folder):
    split = datasets.load_from_disk(str(folder))["validation"]
    return sum(int(np.sum(np.asarray(row["label"]) != 255)) for row in split)


def run_test(folder, model, batch_size, work_dir, monkeypatch):
    reset_accelerate()
    cfg = {
        "test_dataloader": {
            "batch_size": batch_size,
            "num_workers": 0,
            "dataset": {"path": str(folder), "split": "validation", "pipeline": [{"type": "PackSegInputs"}]},
        },
        "test_evaluator": {"type": "IoUMetric", "iou_metrics": ["mIoU", "mDice"]},
    }
    runner = Runner(cfg, work_dir=work_dir)
    seen = []

    class Spy:  # stands in for the --out-dir writer: records one sample per image, at its own size
        written = []

        def process(self, batch, outputs, indices):
            seen.extend((tuple(s.pred_sem_seg.shape), index) for s, index in zip(outputs, indices))

    monkeypatch.setattr("segaccel.engine.test_outputs.PredictionWriter", lambda *a, **k: Spy())
    metrics = runner.test(model=model, out_dir=str(work_dir / "unused"), confusion_matrix=True)
    counts = np.loadtxt(
        work_dir / "confusion_matrix_counts.csv", delimiter=",", skiprows=1, usecols=(1, 2, 3)
    )
    return metrics, counts, seen


def test_mixed_size_batch_equals_one_by_one_for_a_pointwise_model(mixed_size_dataset, tmp_path, monkeypatch):
    pointwise_model = pointwise_segmentor()
    one, counts_one, _ = run_test(mixed_size_dataset, pointwise_model, 1, tmp_path / "b1", monkeypatch)
    batched, counts_batched, seen = run_test(
        mixed_size_dataset, pointwise_model, 3, tmp_path / "b3", monkeypatch
    )
    assert seen == [(size, index) for index, size in enumerate(SIZES)]  # batches [0, 1, 2], [3, 4]
    np.testing.assert_array_equal(counts_batched, counts_one)
    assert counts_one.sum() == labelled_pixels(mixed_size_dataset)
    assert batched == one


def test_mixed_size_batch_counts_every_pixel_once_with_an_attention_model(
    mixed_size_dataset, tmp_path, monkeypatch
):
    """Padding changes an attention model's outputs slightly (see the README), never what is counted."""
    model = tiny_segformer(num_classes=3)
    _, counts_one, _ = run_test(mixed_size_dataset, model, 1, tmp_path / "b1", monkeypatch)
    _, counts_batched, _ = run_test(mixed_size_dataset, model, 5, tmp_path / "b5", monkeypatch)
    assert counts_one.sum() == counts_batched.sum() == labelled_pixels(mixed_size_dataset)
    np.testing.assert_array_equal(counts_one.sum(axis=1), counts_batched.sum(axis=1))  # label areas
