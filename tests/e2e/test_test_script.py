"""scripts/test.py end to end: a model folder, a Hub id (offline cache), a config + checkpoint, the
options, and 1 vs 2 processes under `accelerate launch`.

The model is a tiny random SegFormer; the dataset is 7 synthetic validation images, so with a batch
of 2 on 2 processes the last batches are short (7 is not a multiple of 2 x 2).
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import reset_accelerate
from PIL import Image

from segaccel.config import dump_config
from segaccel.data import build_dataset
from segaccel.models import Segmentor

ROOT = Path(__file__).resolve().parents[2]

NUM_VAL, H, W = 7, 32, 48
DATASET = {
    "path": "segaccel/synthetic",
    "synthetic": {"num_train": 4, "num_val": NUM_VAL, "image_size": [H, W], "seed": 5},
    "split": "validation",
    "pipeline": [{"type": "PackSegInputs"}],
}
DATA_CFG = {
    "test_dataloader": {"batch_size": 2, "num_workers": 0, "dataset": DATASET},
    "test_evaluator": {"type": "IoUMetric", "iou_metrics": ["mIoU", "mDice"]},
}
MODEL_CFG = {
    "backbone": {
        "type": "MixVisionTransformer",
        "embed_dims": 8,
        "num_layers": [1, 1, 1, 1],
        "num_heads": [1, 2, 5, 8],
        "drop_path_rate": 0.0,
    },
    "decode_head": {
        "type": "SegformerHead",
        "in_channels": [8, 16, 40, 64],
        "channels": 16,
        "num_classes": 4,
        "dropout_ratio": 0.0,
    },
    "data_preprocessor": {"size_divisor": 32},
    "id2label": {0: "background", 1: "circle", 2: "square", 3: "triangle"},
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved model folder: config.json, model.safetensors and a config.yaml naming the dataset."""
    torch.manual_seed(0)
    model = Segmentor(**MODEL_CFG)
    for module in model.modules():  # BN statistics that make the random model predict every class
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
    folder = tmp_path_factory.mktemp("model") / "model"
    model.save_pretrained(folder)
    dump_config({"model": MODEL_CFG, **DATA_CFG}, folder / "config.yaml")
    return folder


@pytest.fixture(scope="module")
def single_process_run(model_dir, tmp_path_factory, script_module):
    """test.py on the folder in this process: every output option."""
    test_script = script_module("test")

    reset_accelerate()
    out = tmp_path_factory.mktemp("single")
    metrics = test_script.main(
        [
            str(model_dir),
            "--work-dir",
            str(out),
            "--out-dir",
            str(out / "preds"),
            "--show-dir",
            str(out / "vis"),
            "--confusion-matrix",
        ]
    )
    reset_accelerate()
    return metrics, out


def read_counts(work_dir):
    with open(work_dir / "confusion_matrix_counts.csv", newline="") as f:
        return np.array([[int(v) for v in row[1:]] for row in list(csv.reader(f))[1:]])


@pytest.mark.e2e
def test_model_folder_with_every_output(single_process_run):
    metrics, out = single_process_run
    assert list(metrics) == ["aAcc", "mIoU", "mAcc", "mDice"]
    saved = json.loads((out / "metrics.json").read_text())
    assert {k: saved[k] for k in metrics} == metrics
    assert list(saved["per_class"]) == ["IoU", "Acc", "Dice"]
    assert list(saved["per_class"]["IoU"]) == ["background", "circle", "square", "triangle"]

    # one mask per image, at the image's size, and they are exactly what was evaluated
    names = sorted(p.name for p in (out / "preds").iterdir())
    assert names == [f"{i:06d}.png" for i in range(NUM_VAL)]
    dataset = build_dataset(dict(DATASET), "validation", num_classes=4)
    counts = np.zeros((4, 4), dtype=np.int64)
    for i in range(NUM_VAL):
        with Image.open(out / "preds" / f"{i:06d}.png") as img:
            assert img.mode == "L" and img.size == (W, H)
            pred = np.asarray(img).astype(np.int64)
        label = dataset.load_results(i)["gt_seg_map"].astype(np.int64)
        np.add.at(counts, (label.ravel(), pred.ravel()), 1)
    np.testing.assert_array_equal(read_counts(out), counts)
    assert counts.sum() == NUM_VAL * H * W

    with open(out / "confusion_matrix.csv", newline="") as f:
        rows = [[float(v) for v in row[1:]] for row in list(csv.reader(f))[1:]]
    np.testing.assert_allclose(np.sum(rows, axis=1), 1.0, atol=1e-5)
    assert (out / "confusion_matrix.png").is_file()
    assert sorted(p.name for p in (out / "vis").iterdir()) == names


@pytest.mark.e2e
def test_hub_model_id_from_an_offline_cache(
    model_dir, single_process_run, tmp_path, monkeypatch, script_module
):
    """`org/name` resolves through Segmentor.from_pretrained and the HF cache, with no network."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--segaccel-tests--tiny-segformer"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)  # no trailing newline, as the Hub client writes it
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "config.yaml"):
        shutil.copy(model_dir / name, snapshot / name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    test_script = script_module("test")

    reset_accelerate()
    metrics = test_script.main(["segaccel-tests/tiny-segformer", "--work-dir", str(tmp_path / "w")])
    reset_accelerate()
    assert metrics == single_process_run[0]


@pytest.mark.e2e
def test_config_with_checkpoint_split_slide_and_tta(model_dir, single_process_run, tmp_path, script_module):
    test_script = script_module("test")

    config = tmp_path / "tiny.yaml"
    dump_config({"model": {"type": "Segmentor", **MODEL_CFG}, **DATA_CFG}, config)
    reset_accelerate()
    same = test_script.main(
        [
            str(config),
            "--checkpoint",
            str(model_dir),
            "--work-dir",
            str(tmp_path / "a"),
            "--split",
            "validation",
        ]
    )
    assert same == single_process_run[0]  # the config's model with the folder's weights

    reset_accelerate()
    slide = test_script.main(
        [str(model_dir), "--work-dir", str(tmp_path / "b"), "--mode", "slide", "--crop-size", "32", "32"]
        + [
            "--stride",
            "16",
            "16",
            "--tta",
            "--tta-scales",
            "1.0",
            "1.5",
            "--batch-size",
            "3",
            "--metrics",
            "mIoU",
        ]
    )
    reset_accelerate()
    assert list(slide) == ["aAcc", "mIoU", "mAcc"]
    log = (tmp_path / "b" / "logs").rglob("*.log")
    text = "".join(p.read_text() for p in log)
    assert "'mode': 'slide'" in text and "'scales': [1.0, 1.5], 'flip': True" in text

    with pytest.raises(SystemExit, match="crop-size"):
        test_script.main([str(model_dir), "--mode", "slide"])
    with pytest.raises(SystemExit, match="no such config file"):
        test_script.main([str(tmp_path / "missing.yaml")])


@pytest.mark.e2e
def test_two_processes_give_the_single_process_result(model_dir, single_process_run, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` (two gloo processes on a CPU machine):
    the same metrics, confusion matrix and masks as one process; no sample counted twice."""
    metrics, single = single_process_run
    out = tmp_path / "two"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(29500 + os.getpid() % 1000)]
    command += [str(ROOT / "scripts" / "test.py"), str(model_dir), "--work-dir", str(out)]
    command += ["--out-dir", str(out / "preds"), "--confusion-matrix"]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "with 2 process(es)" in result.stderr  # really two processes (`--cpu` would run one)

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads((single / "metrics.json").read_text())
    assert {k: saved[k] for k in metrics} == metrics
    np.testing.assert_array_equal(read_counts(out), read_counts(single))
    assert read_counts(out).sum() == NUM_VAL * H * W
    names = sorted(p.name for p in (out / "preds").iterdir())
    assert names == sorted(p.name for p in (single / "preds").iterdir())
    for name in names:
        assert (out / "preds" / name).read_bytes() == (single / "preds" / name).read_bytes()
