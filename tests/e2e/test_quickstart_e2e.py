"""The whole pipeline on the built-in dataset: train, validate, export, reload, test again."""

import json
from pathlib import Path

import pytest
import torch

from segaccel import Segmentor
from segaccel.config import load_config
from segaccel.engine.runner import Runner

ROOT = Path(__file__).resolve().parents[2]

SMALL_DATA = "{num_train: 160, num_val: 20, image_size: [48, 64], seed: 3}"


def small_overrides(max_iters: int) -> list[str]:
    return [
        f"train_cfg.max_iters={max_iters}",
        f"train_cfg.val_interval={max_iters // 2}",
        "default_hooks.logger.interval=10",
        "default_hooks.checkpoint.interval=20",
        f"param_scheduler=[{{type: LinearLR, start_factor: 0.01, begin: 0, end: 10}}, "
        f"{{type: PolyLR, power: 1.0, begin: 10, end: {max_iters}}}]",
        f"train_dataloader.dataset.synthetic={SMALL_DATA}",
        f"val_dataloader.dataset.synthetic={SMALL_DATA}",
        f"test_dataloader.dataset.synthetic={SMALL_DATA}",
        "val_dataloader.batch_size=3",  # 20 images: a last batch of 2
    ]


@pytest.mark.e2e
def test_train_export_reload_and_test(tmp_path, fresh_accelerate, script_module):
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", small_overrides(60))
    work_dir = tmp_path / "run"
    runner = Runner(cfg, work_dir=work_dir, config_path="quickstart.yaml")
    metrics = runner.train()
    trained = runner.unwrapped_model.eval()

    # the loss went down and validation ran at the interval and at the end
    records = [json.loads(line) for line in (work_dir / "logs" / "scalars.jsonl").read_text().splitlines()]
    train = [r for r in records if r["mode"] == "train"]
    assert [r["iter"] for r in train] == [10, 20, 30, 40, 50, 60]
    assert train[-1]["loss"] < 0.8 * train[0]["loss"]
    assert [r["iter"] for r in records if r["mode"] == "val"] == [30, 60]
    assert set(metrics) == {"aAcc", "mIoU", "mAcc"}

    # checkpoints every 20 iterations, the last two kept, and the best; exported model and overlays
    assert sorted(p.name for p in (work_dir / "checkpoints").iterdir()) == ["best_mIoU", "iter_40", "iter_60"]
    model_dir = work_dir / "model"
    assert {"config.json", "model.safetensors", "config.yaml", "metrics.json"} <= {
        p.name for p in model_dir.iterdir()
    }
    assert len(list((work_dir / "vis" / "iter_60").glob("*.png"))) == 4
    assert (work_dir / "best_model" / "model.safetensors").is_file()

    # scripts/test.py on the exported folder reproduces the final validation metrics
    fresh_accelerate()
    test_script = script_module("test")

    tested = test_script.main([str(model_dir), "--work-dir", str(tmp_path / "test")])
    assert tested["mIoU"] == metrics["mIoU"] and tested["aAcc"] == metrics["aAcc"]
    assert json.loads((tmp_path / "test" / "metrics.json").read_text())["mIoU"] == metrics["mIoU"]

    # the reloaded model gives exactly the trained model's logits
    reloaded = Segmentor.from_pretrained(model_dir)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(reloaded(x), trained(x))
    assert reloaded.id2label == {0: "background", 1: "circle", 2: "square", 3: "triangle"}

