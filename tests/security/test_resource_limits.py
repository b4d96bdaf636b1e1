"""Bounded work from untrusted configs: values that size work are refused by the guard, naming the key.

Each case of the report is tried where it comes from (a model folder's `config.json` through
`from_pretrained`, a training config through `load_config`/the Runner, an image through
`inference_model`) and must be a `ConfigError` naming the file or key and the limit, raised before
the work or the allocation it asks for. The limits are `segaccel.limits`; raising one lets the same
value through.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from security_helpers import TINY_CONFIG, TINY_SEGFORMER, tiny_segformer

from segaccel import inference_model
from segaccel.config import load_config
from segaccel.limits import get_limits, override
from segaccel.models import Segmentor
from segaccel.registry import ConfigError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "model"
    tiny_segformer().save_pretrained(folder)
    return folder


def edited(saved, tmp_path, change):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# config.json edit -> the error from_pretrained must give
CONFIG_JSON = {
    "num_classes 1e8": (
        lambda c: c["decode_head"].update(num_classes=100_000_000),
        r"config\.json: model\.decode_head\.num_classes: 100000000 is over the limit of 65536 classes; "
        r"set SEGACCEL_MAX_NUM_CLASSES",
    ),
    "a test-time Resize to 60000²": (
        lambda c: c.update(test_pipeline=[{"type": "Resize", "scale": [60000, 60000], "keep_ratio": True}]),
        r"config\.json: model\.test_pipeline\.0\.scale \(w, h\) = \[60000, 60000\] is 60000x60000 \(h x w\): "
        r"a side over the limit of 32768",
    ),
    "a test-time Resize of 12000²": (
        lambda c: c.update(test_pipeline=[{"type": "Resize", "scale": [12000, 12000]}]),
        r"model\.test_pipeline\.0\.scale .* = 144000000 pixels, over the limit of 67108864",
    ),
    "data_preprocessor.size 40000²": (
        lambda c: c["data_preprocessor"].update(size=[40000, 40000], size_divisor=None),
        r"config\.json: model\.data_preprocessor\.size is 40000x40000",
    ),
    "data_preprocessor.test_cfg.size 40000²": (
        lambda c: c["data_preprocessor"].update(test_cfg={"size": [40000, 40000]}),
        r"model\.data_preprocessor\.test_cfg\.size is 40000x40000",
    ),
    "1x1 slide windows on the test pipeline's 512²": (
        lambda c: c.update(
            test_cfg={"mode": "slide", "crop_size": [1, 1], "stride": [1, 1]},
            test_pipeline=[{"type": "Resize", "scale": [512, 512], "keep_ratio": True}],
        ),
        r"config\.json: model\.test_cfg: crop_size \[1, 1\] with stride \[1, 1\] makes 262144 slide windows "
        r"on an image of the test pipeline's size \[512, 512\] \(h, w\), over the limit of 4096",
    ),
}


@pytest.mark.parametrize("name", list(CONFIG_JSON))
def test_config_json_values_over_the_limits(name, saved, tmp_path):
    change, message = CONFIG_JSON[name]
    with pytest.raises(ConfigError, match=message):
        Segmentor.from_pretrained(edited(saved, tmp_path, change))


def test_a_wider_layer_than_the_weights_is_refused_before_it_is_allocated(saved, tmp_path):
    """channels 100000 asks for a 100000 x 400000 fusion conv (160 GB): compared on the meta device."""
    folder = edited(saved, tmp_path, lambda c: c["decode_head"].update(channels=100_000))
    mismatch = r"(?s)model\.safetensors: the weights do not match .*decode_head\.fusion_conv"
    with pytest.raises(RuntimeError, match=mismatch):
        Segmentor.from_pretrained(folder)


def test_slide_windows_of_an_actual_image_are_counted_before_the_first_runs():
    one_pixel = {"mode": "slide", "crop_size": [1, 1], "stride": [1, 1]}
    model = tiny_segformer(test_cfg=one_pixel, test_pipeline=None)
    image = np.zeros((512, 512, 3), np.uint8)
    with pytest.raises(
        ConfigError,
        match=r"model\.test_cfg: crop_size \[1, 1\] with stride \[1, 1\] makes 262144 slide windows on this "
        r"512x512 \(h x w\) input, over the limit of 4096 per image",
    ):
        inference_model(model, image)
    small = np.zeros((24, 40, 3), np.uint8)  # 960 windows: allowed
    assert inference_model(model, small).pred_sem_seg.shape == (24, 40)


def test_the_limits_can_be_raised(saved, tmp_path, monkeypatch):
    slide = {"mode": "slide", "crop_size": 8, "stride": 2}
    folder = edited(saved, tmp_path, lambda c: c.update(test_cfg=slide, test_pipeline=None))
    image = np.zeros((64, 64, 3), np.uint8)  # 29 x 29 = 841 windows
    with override(max_slide_windows=800), pytest.raises(ConfigError, match="makes 841 slide windows"):
        inference_model(Segmentor.from_pretrained(folder), image)
    monkeypatch.setenv("SEGACCEL_MAX_SLIDE_WINDOWS", "841")
    assert get_limits().max_slide_windows == 841
    assert inference_model(Segmentor.from_pretrained(folder), image).pred_sem_seg.shape == (64, 64)
    with override(max_num_classes=2), pytest.raises(ConfigError, match="3 is over the limit of 2 classes"):
        Segmentor(**TINY_SEGFORMER)


def test_a_training_config_over_a_limit_names_the_key(tmp_path, fresh_accelerate):
    from segaccel.engine.runner import Runner

    cfg = {"model": {"type": "Segmentor", **json.loads(json.dumps(TINY_SEGFORMER))}}
    cfg["model"]["decode_head"]["num_classes"] = 100_000_000
    cfg["model"].pop("id2label")
    with pytest.raises(ConfigError, match=r"model\.decode_head\.num_classes: 100000000 is over the limit"):
        Runner(cfg, work_dir=tmp_path / "run").build_model()


# --- nesting and aliases ------------------------------------------------------------------------------------
def test_a_config_json_nested_50000_deep(saved, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    (folder / "config.json").write_text('{"backbone": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(ConfigError, match=r"config\.json: nested 50001 levels deep, over the limit of 100"):
        Segmentor.from_pretrained(folder)


def test_a_yaml_config_nested_50000_deep(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("model: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml: nested deeper than 100 levels"):
        load_config(path)


def test_a_yaml_alias_bomb(tmp_path):
    """Nine levels of ten aliases: 10^9 values once expanded, from 10 short lines."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"bomb\.yaml: more than 1000000 values once its aliases"):
        load_config(path)
    # the same anchors, used a few times, are fine
    path.write_text("base: &b {lr: 0.01, momentum: 0.9}\noptim: *b\nother: *b\n")
    assert load_config(path)["other"] == {"lr": 0.01, "momentum": 0.9}


def test_a_bomb_in_a_base_file_or_an_override(tmp_path):
    (tmp_path / "base.yaml").write_text("x: " + "[" * 200 + "]" * 200 + "\n")
    (tmp_path / "child.yaml").write_text("_base_: [base.yaml]\ny: 1\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: nested deeper than 100 levels"):
        load_config(tmp_path / "child.yaml")
    (tmp_path / "ok.yaml").write_text("y: 1\n")
    with pytest.raises(ConfigError, match=r"override 'x=.*': nested deeper than 100 levels"):
        load_config(tmp_path / "ok.yaml", ["x=" + "[" * 200 + "]" * 200])


def test_a_test_time_scale_factor_is_checked_before_the_resize_allocates():
    """`scale_factor` sizes the output from the image: checked on the actual size, before resizing."""
    model = tiny_segformer(test_pipeline=[{"type": "Resize", "scale_factor": 400.0}])
    too_big = r"Resize: the resized image \(from 24x40\) is 9600x16000 .* over the limit"
    with pytest.raises(ValueError, match=too_big):
        inference_model(model, np.zeros((24, 40, 3), np.uint8))


def test_the_training_script_names_the_config_file_and_key(tmp_path):
    from security_helpers import train

    config = tmp_path / "huge.yaml"
    config.write_text(TINY_CONFIG + "\n")
    result = train(config, tmp_path / "run", "model.data_preprocessor.size=[40000,40000]")
    assert result.returncode != 0
    assert f"ConfigError: {config}: model.data_preprocessor.size is 40000x40000" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
