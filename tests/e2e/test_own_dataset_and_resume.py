"""A newcomer's two paths through `scripts/train.py` and `scripts/test.py`, end to end:

- own data in one flag: a folder of `data/{train,validation}-*.parquet` (`pixel_values`/`annotation`)
  with an `id2label.json`, given as `--dataset DIR`: the model is sized to and named after its
  classes, the saved configs name only that dataset, and `scripts/test.py MODEL --dataset DIR`
  evaluates its validation split (another class count is refused);
- a run with `train_cfg.max_iters=30` stopped by SIGTERM and resumed by the command it printed ends at
  iteration 30 with the straight run's learning rate and weights.
"""

import json
import os
import select
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from dataset_folders import CLASSES, write_parquet_folder
from engine_helpers import ROOT, TINY_CONFIG, load_model_weights, read_scalars

TRAIN = ROOT / "scripts" / "train.py"
TEST = ROOT / "scripts" / "test.py"
# the tiny model; its schedule written to follow the run's length
CONFIG = TINY_CONFIG.replace(
    "{type: PolyLR, power: 1.0, begin: 2, end: 6}", "{type: PolyLR, power: 1.0, begin: 2, end: max_iters}"
)
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run(args, cwd, timeout=600):
    done = subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.e2e
def test_own_parquet_folder_in_one_flag(tmp_path):
    data = write_parquet_folder(tmp_path / "mydata", {"train": 8, "validation": 5})
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    run([TRAIN, "tiny.yaml", "--dataset", data, "--work-dir", "w", "train_cfg.max_iters=4"], tmp_path)

    model = tmp_path / "w" / "model"
    config = json.loads((model / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(CLASSES)}
    assert config["decode_head"]["num_classes"] == len(CLASSES)
    for saved in (tmp_path / "w" / "config.yaml", model / "config.yaml"):
        text = saved.read_text()
        assert "synthetic" not in text and "image_column" not in text and str(data) in text

    out = run([TEST, model, "--dataset", data, "--work-dir", "d", "test_dataloader.batch_size=3"], tmp_path)
    assert f"evaluating on {{'path': '{data}'}}, split 'validation'" in out
    assert "testing on 5 samples of 'validation'" in out and "batch 3 per process" in out
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert 0 <= metrics["mIoU"] <= 100 and set(metrics["per_class"]["IoU"]) == set(CLASSES)

    other = write_parquet_folder(tmp_path / "other", {"train": 2, "validation": 2})
    (other / "id2label.json").write_text(json.dumps(["a", "b", "c", "d", "e"]))
    refused = subprocess.run(
        [sys.executable, TEST, model, "--dataset", other, "--work-dir", "d2"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "has 5 classes" in refused.stderr and "model 3" in refused.stderr


def read_until(proc, marker: bytes, deadline: float) -> bytes:
    out = b""
    while marker not in out:
        ready, _, _ = select.select([proc.stderr.fileno()], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"no {marker!r} before the deadline:\n{out.decode(errors='replace')[-3000:]}"
        chunk = os.read(proc.stderr.fileno(), 65536)
        assert chunk, f"the run ended before {marker!r}:\n{out.decode(errors='replace')[-3000:]}"
        out += chunk
    return out


@pytest.mark.e2e
def test_sigterm_then_the_printed_command_ends_where_the_straight_run_ends(tmp_path):
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    common = [
        "tiny.yaml",
        "train_cfg.max_iters=30",
        "train_cfg.val_interval=0",
        "default_hooks.checkpoint.interval=-1",
    ]
    run([TRAIN, *common, "--work-dir", "straight"], tmp_path)

    proc = subprocess.Popen(
        [sys.executable, TRAIN, *common, "--work-dir", "stopped"],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        out = read_until(proc, b"Iter(train) [10/30]", time.monotonic() + 300)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=300)
    finally:
        proc.kill()
    text = (out + rest).decode(errors="replace")
    assert proc.returncode == 128 + signal.SIGTERM, text[-3000:]
    printed = text.split("Resume it (the run's config comes back from the checkpoint) with:\n  ", 1)[
        1
    ].splitlines()[0]
    assert printed == "python scripts/train.py tiny.yaml --work-dir stopped --resume" or printed.endswith(
        "train.py tiny.yaml --work-dir stopped --resume"
    )
    stopped_at = read_scalars(tmp_path / "stopped")[-1]["iter"]
    assert 10 <= stopped_at < 30

    words = shlex.split(printed)
    run([*words[1:]] if words[0] == "python" else words, tmp_path)  # the command as printed
    straight, resumed = read_scalars(tmp_path / "straight"), read_scalars(tmp_path / "stopped")
    assert straight[-1]["iter"] == resumed[-1]["iter"] == 30
    assert resumed[-1]["lr"] == straight[-1]["lr"]
    assert [r["lr"] for r in resumed if r["iter"] > stopped_at] == [
        r["lr"] for r in straight if r["iter"] > stopped_at
    ]
    a, b = (
        load_model_weights(tmp_path / "straight" / "model"),
        load_model_weights(tmp_path / "stopped" / "model"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
