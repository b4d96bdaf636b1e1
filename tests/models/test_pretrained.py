"""Segmentor.save_pretrained / from_pretrained (models/pretrained.py): the full config.json, strict
loading that names the keys, fine-tuning to another class count, pytorch_model.bin with weights_only.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file
from segmentor_testing import tiny_model

from segaccel.models import Segmentor
from segaccel.registry import ConfigError


# --- Hub: save_pretrained / from_pretrained ---------------------------------------------------------
def test_save_and_load_round_trip_gives_identical_logits(tmp_path):
    model = tiny_model(backbone=dict(type="_TestConvBackbone", channels=4, pretrained="imagenet.safetensors",
                                     init_cfg={"type": "Pretrained", "checkpoint": "x.pth"}))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "config.json").read_text())
    # the full description, pointing at no pretrained weights any more
    assert saved["backbone"] == {
        "type": "_TestConvBackbone", "channels": 4, "pretrained": None, "init_cfg": None
    }
    assert saved["decode_head"] == model.config["decode_head"]
    assert saved["data_preprocessor"]["std"] == [50.0, 51.0, 52.0]
    assert saved["id2label"] == {"0": "class0", "1": "class1", "2": "class2"}
    assert saved["palette"] == [[0, 0, 0], [1, 2, 3], [2, 4, 6]]
    assert saved["test_pipeline"] == [{"type": "Resize", "scale": [16, 12], "keep_ratio": True}]
    assert saved["test_cfg"] == {"mode": "whole"} and saved["format_version"] == 1

    loaded = Segmentor.from_pretrained(tmp_path)
    assert not loaded.training
    assert loaded.id2label == {0: "class0", 1: "class1", 2: "class2"}  # int keys again
    assert loaded.backbone.pretrained is None
    x = torch.randn(2, 3, 10, 14)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # loading again and saving again is a fixed point
    loaded.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == saved


def test_from_pretrained_overrides_and_map_location(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    slide = {"mode": "slide", "crop_size": [8, 8], "stride": [4, 4]}
    loaded = Segmentor.from_pretrained(tmp_path, test_cfg=slide, map_location="cpu", local_files_only=True)
    assert loaded.test_cfg == slide
    assert next(loaded.parameters()).device.type == "cpu"


def test_settings_changed_on_the_model_are_checked_and_saved(tmp_path):
    model = tiny_model()
    model.test_cfg = {"mode": "slide", "crop_size": (8, 8), "stride": 4}
    assert model.test_cfg == {"mode": "slide", "crop_size": [8, 8], "stride": [4, 4]}
    model.id2label = {"0": "sky", "1": "road", "2": "car"}
    assert model.id2label == {0: "sky", 1: "road", 2: "car"} and model.label2id["car"] == 2
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["test_cfg"]["mode"] == "slide" and saved["id2label"]["2"] == "car"
    assert Segmentor.from_pretrained(tmp_path).label2id == {"sky": 0, "road": 1, "car": 2}

    with pytest.raises(ConfigError, match="expected keys 0..2"):
        model.id2label = {0: "sky"}
    with pytest.raises(ConfigError, match="label2id .* does not match model.id2label"):
        model.label2id = {"sky": 1}
    model.test_cfg["stride"] = "big"  # edited in place: caught before inference
    with pytest.raises(ConfigError, match=r"test_cfg.stride: expected a positive int or \(h, w\)"):
        model.predict(torch.zeros(1, 3, 8, 8))


def test_from_pretrained_is_strict_and_names_the_keys(tmp_path, caplog):
    tiny_model().save_pretrained(tmp_path)
    # copies: safetensors < 0.5 maps the file, and it is rewritten below
    weights = {k: v.clone() for k, v in load_file(tmp_path / "model.safetensors").items()}
    del weights["decode_head.conv_seg.bias"]
    weights["decode_head.extra.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(RuntimeError) as info:
        Segmentor.from_pretrained(tmp_path)
    message = str(info.value)
    assert "missing keys (in the model, not in the weights): decode_head.conv_seg.bias" in message
    assert "unexpected keys (in the weights, not in the model): decode_head.extra.weight" in message
    with caplog.at_level(logging.WARNING, logger="segaccel.models"):
        loaded = Segmentor.from_pretrained(tmp_path, strict=False)
    assert "decode_head.conv_seg.bias" in caplog.text
    assert torch.equal(loaded.decode_head.conv_seg.weight, weights["decode_head.conv_seg.weight"])


def test_shape_mismatch_raises_unless_the_class_count_is_changed(tmp_path, caplog):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["backbone.conv.bias"] = torch.zeros(5)
    save_file(weights, tmp_path / "other.safetensors")
    with pytest.raises(RuntimeError, match=r"backbone.conv.bias: weights \(5,\) vs model \(4,\)"):
        model.load_weights(weights, source="other.safetensors")

    # fine-tuning to 5 classes: the classifier is re-initialised (and said so), the rest is loaded
    with caplog.at_level(logging.WARNING, logger="segaccel.models"):
        five = Segmentor.from_pretrained(tmp_path, num_classes=5)
    assert five.num_classes == 5 and five.decode_head.conv_seg.weight.shape[0] == 5
    assert five.id2label is None and five.palette is None  # the saved names were for 3 classes
    assert "decode_head.conv_seg.weight" in caplog.text and "re-initialised" in caplog.text
    assert torch.equal(five.backbone.conv.weight, model.backbone.conv.weight)
    named = Segmentor.from_pretrained(tmp_path, id2label={"0": "a", "1": "b"})
    assert named.num_classes == 2 and named.label2id == {"a": 0, "b": 1}


def test_config_json_types_resolve_only_through_the_registry(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["backbone"]["type"] = "torch.nn.Conv2d"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config.json: model.backbone.type: unknown model type 'torch.nn"):
        Segmentor.from_pretrained(tmp_path)
    cfg["backbone"]["type"] = "_TestConvBackbone"
    cfg["extra_thing"] = 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="config.json: unknown entries extra_thing"):
        Segmentor.from_pretrained(tmp_path)


def test_pytorch_model_bin_is_loaded_with_weights_only(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    loaded = Segmentor.from_pretrained(tmp_path)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="no weights file"):
        Segmentor.from_pretrained(tmp_path)
