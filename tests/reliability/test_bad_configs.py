"""Bad configs fail when the run is built, before any training step, with an error naming the config key.

Registry-level behaviour (close names, wrong arguments) is unit-tested in tests/test_registry.py; here
each fault goes through `Runner.train()` on the tiny engine config and nothing may have been trained.
"""

import json

import huggingface_hub.constants
import pytest
from engine_helpers import TINY_CONFIG

from segaccel.config import load_config
from segaccel.engine.runner import Runner
from segaccel.registry import ConfigError

PACK = "{type: PackSegInputs}]"
CASES = {
    "unknown type": (
        ["model.decode_head.type=SegformerHeed"],
        ConfigError,
        r"model\.decode_head\.type: unknown model type 'SegformerHeed'\. Did you mean 'SegformerHead'",
    ),
    "unknown argument": (
        ["model.decode_head.chanels=16"],
        ConfigError,
        r"model\.decode_head: wrong arguments for SegformerHead: .*unexpected keyword argument 'chanels'",
    ),
    "unknown argument passed on through **kwargs": (
        ["param_scheduler=[{type: PolyLR, powr: 1.0}]"],
        ConfigError,
        r"param_scheduler\.0: wrong arguments for PolyLR: .*'powr'",
    ),
    "unknown optimizer argument": (
        ["optim_wrapper.optimizer.lrr=0.1"],
        ConfigError,
        r"optim_wrapper\.optimizer: wrong arguments for AdamW: .*'lrr'",
    ),
    "missing argument": (
        ["train_dataloader.dataset.pipeline=[{type: RandomCrop}, {type: PackSegInputs}]"],
        ConfigError,
        r"train_dataloader\.dataset\.pipeline\.0: wrong arguments for RandomCrop: "
        r"missing a required argument: 'crop_size'",
    ),
    "num_classes disagrees with id2label": (
        ["model.decode_head.num_classes=5", "model.id2label={0: a, 1: b}"],
        ConfigError,
        r"model\.decode_head\.num_classes is 5 but id2label has 2 classes",
    ),
    "pipeline without PackSegInputs": (
        ["train_dataloader.dataset.pipeline=[{type: RandomFlip, prob: 0.5}]"],
        ConfigError,
        r"train_dataloader\.dataset\.pipeline: must end with \{type: PackSegInputs\} .* ends with RandomFlip",
    ),
    "unknown metric": (
        ["val_evaluator.type=MeanIoUU"],
        ConfigError,
        r"val_evaluator\.type: unknown metric type 'MeanIoUU'",
    ),
    "unknown transform": (
        ["train_dataloader.dataset.pipeline=[{type: RandomCropp, crop_size: 8}, {type: PackSegInputs}]"],
        ConfigError,
        r"RandomCropp.*Did you mean 'RandomCrop'",
    ),
    "a value the constructor refuses": (
        ["train_dataloader.dataset.pipeline=[{type: RandomCrop, crop_size: 8, cat_max_ratio: 2}]"],
        ConfigError,
        r"train_dataloader\.dataset\.pipeline\.0: RandomCrop: cat_max_ratio must be in \(0, 1\], got 2",
    ),
    "crop larger than every image, no padding": (
        ["train_dataloader.dataset.pipeline=[{type: RandomCrop, crop_size: [24, 80]}, " + PACK],
        ConfigError,
        r"train_dataloader\.dataset\.pipeline\.0\.crop_size: RandomCrop's crop_size \(h, w\) = \(24, 80\) "
        r"is larger than every image that reaches it \(8 samples probed, \(h x w\) 32x48, ",
    ),
    "dataset Hub id that does not exist offline": (
        ["train_dataloader.dataset.path=nobody/no-such-dataset"],
        ConnectionError,
        r"train_dataloader\.dataset\.path: cannot load 'nobody/no-such-dataset': .*offline mode",
    ),
    "dataset folder that does not exist": (
        ["train_dataloader.dataset.path=/nonexistent/segaccel-data"],
        FileNotFoundError,
        r"train_dataloader\.dataset\.path: cannot load '/nonexistent/segaccel-data'",
    ),
    "Hub id that does not exist offline": (
        ["load_from=nobody/does-not-exist"],
        FileNotFoundError,
        r"load_from: no weights at nobody/does-not-exist: .*Hub model 'nobody/does-not-exist'",
    ),
    "empty training split": (
        ["train_dataloader.dataset.synthetic.num_train=0"],
        ValueError,
        r"synthetic dataset: num_train is 0: every split needs at least one sample",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_config_fails_before_training(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import: the constant too, and an empty cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    overrides, error, message = CASES[name]
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG)
    cfg = load_config(str(tmp_path / "tiny.yaml"), overrides)
    with pytest.raises(error, match=message):
        Runner(cfg, work_dir=tmp_path / "work").train()
    assert not list((tmp_path / "work").rglob("*.safetensors")), "a checkpoint was written"
    scalars = tmp_path / "work" / "logs" / "scalars.jsonl"
    if scalars.exists():
        assert not [r for r in map(json.loads, scalars.read_text().splitlines()) if r.get("mode") == "train"]
