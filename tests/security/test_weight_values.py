"""Weights that are not what they claim are refused, naming the tensors, through every door.

A `model.safetensors` whose float parameters are stored as int64, bool or uint8 used to load without
a word (cast by `load_state_dict`) and predict one class; NaN/Inf weights loaded and `test.py`
reported metrics. Float-to-float casts (float16 weights into a float32 model) stay allowed and are
logged.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from security_helpers import tiny_segformer, tiny_training_config

from segaccel.config import load_config
from segaccel.models import Segmentor


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "model"
    tiny_segformer().save_pretrained(folder)
    return folder


def rewritten(saved, tmp_path, change) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    weights = load_file(str(folder / "model.safetensors"))
    save_file(change(weights), str(folder / "model.safetensors"))
    return folder


def floats_as(dtype):
    def change(weights):
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}

    return change


def one_value(name, value):
    def change(weights):
        weights[name] = weights[name].clone()
        weights[name].view(-1)[3] = value
        return weights

    return change


HEAD = "decode_head.conv_seg.weight"
WRONG = {
    "int64": (floats_as(torch.int64), r"int64 in the file, float32 in the model"),
    "bool": (floats_as(torch.bool), r"bool in the file, float32 in the model"),
    "uint8": (floats_as(torch.uint8), r"uint8 in the file, float32 in the model"),
    "NaN": (one_value(HEAD, float("nan")), rf"NaN or infinite values.*\n  {HEAD}: 1 of 24 values"),
    "Inf": (one_value(HEAD, float("inf")), rf"NaN or infinite values.*\n  {HEAD}: 1 of 24 values"),
}


@pytest.mark.parametrize("name", list(WRONG))
def test_from_pretrained(name, saved, tmp_path):
    change, message = WRONG[name]
    with pytest.raises(ValueError, match=message):
        Segmentor.from_pretrained(rewritten(saved, tmp_path, change))


@pytest.mark.parametrize("name", ["int64", "NaN"])
def test_load_from(name, saved, tmp_path, fresh_accelerate):
    from segaccel.engine.runner import Runner

    change, message = WRONG[name]
    folder = rewritten(saved, tmp_path, change)
    cfg = load_config(tiny_training_config(tmp_path, load_from=str(folder)))
    with pytest.raises(ValueError, match=message):
        Runner(cfg, work_dir=tmp_path / "run").build_model()


@pytest.mark.parametrize("name", ["uint8", "Inf"])
def test_the_checkpoint_option_of_the_test_script(name, saved, tmp_path, fresh_accelerate, script_module):
    change, message = WRONG[name]
    folder = rewritten(saved, tmp_path, change)
    config = tiny_training_config(tmp_path)
    args = [str(config), "--checkpoint", str(folder), "--work-dir", str(tmp_path / "w")]
    with pytest.raises(ValueError, match=message):
        script_module("test").main(args)
    assert not (tmp_path / "w" / "metrics.json").exists()  # no metrics reported


def test_the_converters(tmp_path, script_module):
    """An MMSegmentation checkpoint with a NaN weight (convert_checkpoint.py --config)."""
    model = tiny_segformer()
    state = dict(model.state_dict())
    state[HEAD] = state[HEAD].clone()
    state[HEAD].view(-1)[0] = float("nan")
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "tiny.pth")
    config = tiny_training_config(tmp_path)
    args = [str(tmp_path / "tiny.pth"), str(tmp_path / "out"), "--config", str(config)]
    with pytest.raises(ValueError, match=rf"tiny\.pth: 1 tensor\(s\) hold NaN .*\n  {HEAD}: 1 of 24"):
        script_module("convert_checkpoint").main(args)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_float16_weights_load_into_a_float32_model_and_the_cast_is_logged(saved, tmp_path, caplog):
    folder = rewritten(saved, tmp_path, floats_as(torch.float16))
    with caplog.at_level(logging.INFO, logger="segaccel.models"):
        loaded = Segmentor.from_pretrained(folder)
    assert re.search(r"weights cast to the model's dtype: \d+ tensor\(s\) float16 -> float32", caplog.text)
    original = load_file(str(saved / "model.safetensors"))
    for k, v in loaded.state_dict().items():
        if v.is_floating_point():
            assert v.dtype == torch.float32 and torch.equal(v, original[k].half().float()), k

