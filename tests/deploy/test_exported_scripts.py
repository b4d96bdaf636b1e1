"""A briefly trained quickstart model, exported: `scripts/test.py EXPORTED_DIR` gives the PyTorch
model's metrics (same code, same figures to 2 decimals) in whole and slide mode, and
`scripts/infer.py --model EXPORTED_DIR` writes the same masks."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segaccel.config import load_config
from segaccel.engine.runner import Runner
from segaccel.export import export_model
from segaccel.export.source import load_model

ROOT = Path(__file__).resolve().parents[2]
DATA = "{num_train: 96, num_val: 12, image_size: [48, 64], seed: 3}"
TINY = [  # quickstart's SegFormer, narrower and shallower so the test stays quick on a CPU
    "model.backbone.embed_dims=8",
    "model.backbone.num_layers=[1, 1, 1, 1]",
    "model.decode_head.in_channels=[8, 16, 40, 64]",
    "model.decode_head.channels=32",
]


def reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model folder, exported folder) of quickstart trained for 40 iterations on small images."""
    overrides = TINY + [
        "train_cfg.max_iters=40",
        "train_cfg.val_interval=40",
        "default_hooks.logger.interval=20",
        "default_hooks.checkpoint.interval=-1",
        "default_hooks.visualization.interval=0",
        "param_scheduler=[{type: PolyLR, power: 1.0, begin: 0, end: 40}]",
        f"train_dataloader.dataset.synthetic={DATA}",
        f"val_dataloader.dataset.synthetic={DATA}",
        f"test_dataloader.dataset.synthetic={DATA}",
    ]
    work_dir = tmp_path_factory.mktemp("quickstart")
    reset_accelerate()
    Runner(load_config(ROOT / "configs" / "quickstart.yaml", overrides), work_dir=work_dir).train()
    reset_accelerate()
    source = load_model(work_dir / "model")
    exported = work_dir / "exported"
    export_model(source.model, exported, extra_dir=source.extra_dir)
    return work_dir / "model", exported


SLIDE = ["--mode", "slide", "--crop-size", "32", "48", "--stride", "24", "32"]


@pytest.mark.e2e
@pytest.mark.parametrize("options", [[], SLIDE], ids=["whole", "slide"])
def test_test_script_gives_the_same_metrics(trained, options, tmp_path, script_module):
    model_dir, exported = trained
    test_script = script_module("test")
    results = {}
    for name, target in (("pytorch", model_dir), ("exported", exported)):
        reset_accelerate()
        metrics = test_script.main([str(target), "--work-dir", str(tmp_path / name), *options])
        reset_accelerate()
        saved = json.loads((tmp_path / name / "metrics.json").read_text())
        results[name] = (metrics, saved["per_class"])
    (pytorch, per_class), (exported_metrics, exported_per_class) = results["pytorch"], results["exported"]
    assert pytorch["mIoU"] > 20  # trained: better than one class everywhere
    rounded = {k: round(v, 2) for k, v in pytorch.items()}
    assert {k: round(v, 2) for k, v in exported_metrics.items()} == rounded
    assert exported_per_class == per_class


@pytest.mark.e2e
def test_test_script_refuses_tta_on_an_exported_folder(trained, tmp_path, script_module):
    with pytest.raises(SystemExit, match="--tta"):
        script_module("test").main([str(trained[1]), "--tta", "--work-dir", str(tmp_path)])


@pytest.mark.e2e
def test_infer_script_writes_the_same_masks(trained, tmp_path, script_module):
    model_dir, exported = trained
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate([(48, 64), (61, 83)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    infer = script_module("infer")
    for name, target in (("pytorch", model_dir), ("exported", exported)):
        infer.main([str(images), "--model", str(target), "--out-dir", str(tmp_path / name)])
    for i in range(2):
        expected = np.asarray(Image.open(tmp_path / "pytorch" / "masks" / f"im{i}.png"))
        got = np.asarray(Image.open(tmp_path / "exported" / "masks" / f"im{i}.png"))
        np.testing.assert_array_equal(got, expected)
        assert (tmp_path / "exported" / "overlays" / f"im{i}.png").is_file()
