"""`load_from`: start from weights (a .safetensors file, a model folder, a Hub id) without resuming.

The Hub id is resolved offline through a hand-built Hugging Face cache (`HF_HUB_OFFLINE=1`):
`models--org--name/refs/main` holds the commit hash (no trailing newline) and
`snapshots/<hash>/model.safetensors` the weights, exactly where `hf_hub_download` looks.
"""

import shutil

import huggingface_hub.constants
import pytest
import torch
from engine_helpers import read_scalars, reset_accelerate

from segaccel.config import load_config
from segaccel.engine.runner import Runner
from segaccel.models.weights import resolve_weights_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_runner(config, work_dir, overrides=()):
    reset_accelerate()
    return Runner(load_config(config, list(overrides)), work_dir=work_dir)


@pytest.fixture
def source(tiny_config, tmp_path, fresh_accelerate):
    """A saved tiny model (seed 7) in `src/`, and the same weights in an offline HF cache as org/tiny-seg."""
    model = make_runner(tiny_config, tmp_path / "src_run", ["seed=7"]).build_model()
    model.save_pretrained(tmp_path / "src")
    snapshot = tmp_path / "hub" / "models--org--tiny-seg" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    shutil.copy(tmp_path / "src" / "model.safetensors", snapshot / "model.safetensors")
    (tmp_path / "hub" / "models--org--tiny-seg" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny-seg" / "refs" / "main").write_text(COMMIT)
    return model.state_dict()


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.mark.parametrize("kind", ["file", "folder", "hub"])
def test_load_from_file_folder_or_hub_id(kind, tiny_config, tmp_path, source, offline_hub):
    where = {
        "file": tmp_path / "src" / "model.safetensors",
        "folder": tmp_path / "src",
        "hub": "org/tiny-seg",
    }
    runner = make_runner(tiny_config, tmp_path / "run", ["seed=0", f"load_from={where[kind]}"])
    loaded = runner.build_model().state_dict()
    assert all(torch.equal(loaded[k], source[k]) for k in source)
    fresh = make_runner(tiny_config, tmp_path / "fresh", ["seed=0"]).build_model().state_dict()
    assert not torch.equal(fresh["decode_head.conv_seg.weight"], source["decode_head.conv_seg.weight"])


def test_load_from_another_class_count_reinitialises_the_classifier(tiny_config, tmp_path, fresh_accelerate):
    src = make_runner(
        tiny_config, tmp_path / "src_run", ["seed=7", "model.decode_head.num_classes=3"]
    ).build_model()
    src.save_pretrained(tmp_path / "src3")
    runner = make_runner(tiny_config, tmp_path / "run", [f"load_from={tmp_path / 'src3'}"])
    model = runner.build_model()
    assert torch.equal(
        model.backbone.layers[0][0].projection.weight, src.backbone.layers[0][0].projection.weight
    )
    assert model.decode_head.conv_seg.weight.shape[0] == 4  # the config's 4 classes, re-initialised
    log = (tmp_path / "run" / "logs" / "train.log").read_text()
    assert "re-initialised for the new class count" in log and "decode_head.conv_seg.weight" in log


def test_training_from_a_hub_id_starts_at_iteration_0(tiny_config, tmp_path, source, offline_hub):
    runner = make_runner(
        tiny_config,
        tmp_path / "run",
        [
            "load_from=org/tiny-seg",
            "train_cfg={type: IterBasedTrainLoop, max_iters: 1}",
            "val_dataloader=null",
        ],
    )
    runner.train()
    assert [r["iter"] for r in read_scalars(tmp_path / "run")] == [1]
    assert int(next(iter(runner.optimizer.state.values()))["step"]) == 1  # a fresh optimizer
    log = (tmp_path / "run" / "logs" / "train.log").read_text()
    assert "load from           : org/tiny-seg" in log and "iterations          : 1 (starting at 0)" in log


def test_unknown_weights_say_what_was_tried(tmp_path, offline_hub):
    with pytest.raises(FileNotFoundError, match="no such file or folder, and not a Hub model id"):
        resolve_weights_file("./missing/model.safetensors")
    with pytest.raises(FileNotFoundError, match="the Hub model 'org/absent' has no model.safetensors"):
        resolve_weights_file("org/absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected a model.safetensors file or a folder holding one"):
        resolve_weights_file(tmp_path / "empty")
