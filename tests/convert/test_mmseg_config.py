"""MMSegmentation configs in: read without executing them, mapped to ours, built into the same models.

The configs are MMSegmentation-style files written by `mmseg_style_configs.py` (a `_base_` tree with
variables, `_delete_`, `{{_base_.x}}`, comprehensions), narrowed like the fixtures in
tests/fixtures/mmseg, whose `config.py` is mmengine's own dump of the merged config.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from mmseg_style_configs import write_mmseg_configs

from segaccel.config import load_config, to_plain
from segaccel.convert import convert_mmseg_state_dict, restricted_load
from segaccel.convert.mmseg_config import convert_mmseg_config
from segaccel.convert.pyconfig import read_mmseg_config
from segaccel.models import Segmentor
from segaccel.registry import MODELS, ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "mmseg"
FAMILIES = [
    "segformer_mit-b0",
    "pspnet_r50-d8",
    "fcn_r50-d8",
    "deeplabv3_r50-d8",
    "deeplabv3plus_r50-d8",
    "upernet_swin-t",
    "upernet_convnext-t",
]


@pytest.fixture(scope="module")
def mmseg_configs(tmp_path_factory) -> dict[str, Path]:
    return write_mmseg_configs(tmp_path_factory.mktemp("mmseg_configs"))


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family", FAMILIES)
def test_base_chain_builds_the_model_whose_keys_are_the_checkpoints(mmseg_configs, family, tmp_path, capsys):
    # `scripts/convert_mmseg_config.py MMSEG_CONFIG.py OUT.yaml` as a user runs it, then our YAML read back
    out = tmp_path / f"{family}.yaml"
    _script("convert_mmseg_config").main([str(mmseg_configs[family]), str(out)])
    assert f"wrote {out}" in capsys.readouterr().out
    cfg = load_config(out)
    # the same result as converting mmengine's own dump of the merged config (every key, not just the model)
    dumped = to_plain(convert_mmseg_config(FIXTURES / family / "config.py")[0])
    assert dumped["model"]["backbone"].pop("pretrained", None) is None  # the fixtures were made without
    assert cfg["model"]["backbone"].pop("pretrained")  # ImageNet weights named, as in MMSegmentation
    assert cfg == dumped
    model = MODELS.build({**cfg["model"], "test_pipeline": cfg["model"]["test_pipeline"]}, key="model")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights = convert_mmseg_state_dict(restricted_load(FIXTURES / family / "checkpoint_0x.pth")["state_dict"])
    assert ours == {k: tuple(v.shape) for k, v in weights.items()}
    model.load_weights(weights, strict=True)


def test_converted_pieces_are_ours(mmseg_configs):
    cfg, notes = convert_mmseg_config(mmseg_configs["upernet_convnext-t"])
    model = cfg["model"]
    assert model["backbone"]["type"] == "ConvNeXt"  # mmpretrain.ConvNeXt
    assert model["backbone"]["arch"] == {"depths": [1, 1, 2, 1], "channels": [8, 16, 32, 64]}  # _delete_
    assert model["decode_head"]["norm_cfg"] == {"type": "BN", "requires_grad": True}  # SyncBN
    pre = model["data_preprocessor"]
    assert pre["size"] == [512, 512] and "channel_order" not in pre  # bgr_to_rgb: the network takes RGB
    assert model["test_cfg"] == {"mode": "slide", "crop_size": [512, 512], "stride": [341, 341]}
    assert model["test_pipeline"] == [
        {"type": "Resize", "scale": [2048, 512], "keep_ratio": True},
        {"type": "LoadAnnotations"},  # labels enter after the resize: metrics at the original size
        {"type": "PackSegInputs"},
    ]
    train = cfg["train_dataloader"]
    assert train["batch_size"] == 2 and train["dataset"]["path"] == "zhoubolei/scene_parse_150"
    assert train["dataset"]["reduce_zero_label"] is True and len(train["dataset"]["id2label"]) == 150
    assert [s["type"] for s in train["dataset"]["pipeline"]] == [
        "RandomResize", "RandomCrop", "RandomFlip", "PhotoMetricDistortion", "PackSegInputs"
    ]
    assert cfg["mixed_precision"] == "fp16"  # AmpOptimWrapper
    decay = {"decay_rate": 0.9, "decay_type": "stage_wise", "num_layers": 6}
    assert cfg["optim_wrapper"]["paramwise_cfg"] == decay
    poly = {"type": "PolyLR", "eta_min": 0.0, "power": 1.0, "begin": 1500, "end": 160000}
    assert cfg["param_scheduler"][1] == poly  # by_epoch=False dropped
    assert cfg["train_cfg"] == {"type": "IterBasedTrainLoop", "max_iters": 160000, "val_interval": 16000}
    assert any("data_root" in note for note in notes)
    segformer, notes = convert_mmseg_config(mmseg_configs["segformer_mit-b0"])
    assert segformer["model"]["backbone"]["pretrained"] == "nvidia/mit-b0"
    assert segformer["model"]["backbone"].get("layer_norm_eps", 1e-6) == 1e-6  # MMSegmentation's MiT eps


def test_the_script_writes_a_yaml_config_that_loads(mmseg_configs, tmp_path, capsys):
    script = _script("convert_mmseg_config")
    out = tmp_path / "pspnet.yaml"
    script.main([str(mmseg_configs["pspnet_r50-d8"]), str(out)])
    assert "wrote" in capsys.readouterr().out
    text = out.read_text()
    assert text.startswith("# Converted from the MMSegmentation config pspnet_r50-d8_reduced.py")
    cfg = load_config(out)
    assert cfg["model"]["backbone"]["type"] == "ResNetV1c" and cfg["train_cfg"]["max_iters"] == 80000
    torch.manual_seed(0)
    Segmentor(**{k: v for k, v in cfg["model"].items() if k != "type"} | {
        "backbone": {**cfg["model"]["backbone"], "pretrained": None}
    })
    # a part segaccel lacks is an error naming its key
    bad = mmseg_configs["pspnet_r50-d8"].parent / "unknown_backbone.py"
    bad.write_text("_base_ = ['./pspnet_r50-d8_reduced.py']\nmodel = dict(backbone=dict(type='MobileNetV3'))")
    with pytest.raises(SystemExit, match=r"model\.backbone.*MobileNetV3"):
        script.main([str(bad), str(tmp_path / "bad.yaml")])


def test_what_has_no_counterpart_is_a_clear_error(mmseg_configs, tmp_path):
    top = mmseg_configs["pspnet_r50-d8"]
    cases = {
        "model = dict(backbone=dict(dcn=dict(type='DCNv2')))": r"model\.backbone\.dcn=.*not supported",
        "train_cfg = dict(type='EpochBasedTrainLoop')": r"train_cfg\.type: 'EpochBasedTrainLoop'",
        "train_dataloader = dict(dataset=dict(type='iSAIDDataset'))": r"dataset\.type.*iSAID",
        "test_pipeline = [dict(type='TestTimeAug', transforms=[])]\n"
        "test_dataloader = dict(dataset=dict(pipeline=test_pipeline))": r"TestTimeAug",
        "model = dict(type='CascadeEncoderDecoder')": r"model\.type",
    }
    for i, (text, error) in enumerate(cases.items()):
        path = top.parent / f"case_{i}.py"
        path.write_text(f"_base_ = ['./{top.name}']\n{text}\n")
        with pytest.raises(ConfigError, match=error):
            convert_mmseg_config(path)
    # a model trained on a dataset without a recipe still converts, model only
    path = top.parent / "case_2.py"
    assert set(convert_mmseg_config(path, model_only=True)[0]) == {"model"}


# --- the reader -----------------------------------------------------------------------------------
def test_reader_evaluates_the_pure_subset(tmp_path):
    (tmp_path / "base.py").write_text(
        "a = dict(x=1, y=dict(z=2), keep=[1, 2])\nlst = [1, 2]\nscale = (2048, 512)\n"
    )
    (tmp_path / "child.py").write_text(
        """_base_ = 'base.py'
import copy
from mmseg.models import EncoderDecoder
w = 8
ratios = [0.5, 1.0]
a = dict(y=dict(q=w * 2 + 1), keep=[3])
b = dict(_delete_=True, only=1)
c = [dict(type='Resize', scale_factor=r) for r in ratios if r < 1]
d = {**dict(k=1), 'l': -w // 3, 'm': 2 ** 3, 'n': w % 3, 'o': 7 / 2}
e = f'work_dirs/{w}x{w}'
f = copy.deepcopy(c)
f[0]['scale_factor'] = 0.25
g = {{_base_.scale}}
h = '{{_base_.a.y}}'
i = EncoderDecoder
j = max(ratios) if len(ratios) > 1 else None
k = list(zip([1, 2], 'ab'))
lst = lst_copy = [4]
lst_copy += [5]
d.update(extra=True)
del w
"""
    )
    (tmp_path / "base2.py").write_text("b = dict(old=1, more=2)\n")
    child = (tmp_path / "child.py").read_text().replace("'base.py'", "['base.py', 'base2.py']")
    (tmp_path / "child.py").write_text(child)
    cfg = read_mmseg_config(tmp_path / "child.py")
    assert cfg["a"] == {"x": 1, "y": {"z": 2, "q": 17}, "keep": [3]}  # dicts merge, lists replace
    assert cfg["b"] == {"only": 1}  # _delete_ replaces the base's dict
    assert cfg["c"] == [{"type": "Resize", "scale_factor": 0.5}]
    assert cfg["d"] == {"k": 1, "l": -3, "m": 8, "n": 2, "o": 3.5, "extra": True}
    assert cfg["e"] == "work_dirs/8x8" and cfg["f"][0]["scale_factor"] == 0.25
    assert cfg["c"][0]["scale_factor"] == 0.5  # deepcopy: f is a copy
    assert cfg["g"] == (2048, 512) and cfg["h"] == {"z": 2}
    assert cfg["i"] == "EncoderDecoder" and cfg["j"] == 1.0 and cfg["k"] == [(1, "a"), (2, "b")]
    assert cfg["lst"] == [4, 5] and "w" not in cfg and "copy" not in cfg


def test_reader_runs_nothing_and_names_the_line(tmp_path):
    marker = tmp_path / "ran"
    attempts = [
        f"import os\nos.system('touch {marker}')\n",
        f"__import__('os').system('touch {marker}')\n",
        f"def f():\n    open('{marker}', 'w')\nf()\n",
        f"x = (lambda: open('{marker}', 'w'))()\n",
        f"x = open('{marker}', 'w')\n",
        "x = [].__class__.__base__.__subclasses__()\n",
        "for i in range(3):\n    pass\n",
    ]
    for i, text in enumerate(attempts):
        path = tmp_path / f"attempt_{i}.py"
        path.write_text("a = 1\n" + text)
        with pytest.raises(ConfigError, match=rf"attempt_{i}\.py:\d+: "):
            read_mmseg_config(path)
    assert not marker.exists()


def test_reader_inheritance_errors(tmp_path):
    (tmp_path / "x.py").write_text("model = dict(a=1)\n")
    (tmp_path / "y.py").write_text("model = dict(b=1)\n")
    (tmp_path / "dup.py").write_text("_base_ = ['x.py', 'y.py']\n")
    with pytest.raises(ConfigError, match=r"define \['model'\] more than once"):
        read_mmseg_config(tmp_path / "dup.py")
    (tmp_path / "scalar.py").write_text("model = 3\n")
    (tmp_path / "over.py").write_text("_base_ = 'scalar.py'\nmodel = dict(a=1)\n")
    with pytest.raises(ConfigError, match="_delete_=True to replace it"):
        read_mmseg_config(tmp_path / "over.py")
    (tmp_path / "missing.py").write_text("_base_ = ['nowhere.py']\n")
    with pytest.raises(FileNotFoundError, match="nowhere.py not found"):
        read_mmseg_config(tmp_path / "missing.py")
    (tmp_path / "loop.py").write_text("_base_ = ['loop.py']\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        read_mmseg_config(tmp_path / "loop.py")
    (tmp_path / "basevar.py").write_text("_base_ = ['x.py']\nm = model\n")
    with pytest.raises(ConfigError, match=r"'model' is a variable of the _base_ files"):
        read_mmseg_config(tmp_path / "basevar.py")


def test_reader_reads_pure_python_style_configs(tmp_path):
    (tmp_path / "_base_").mkdir()
    (tmp_path / "_base_" / "model.py").write_text("model = dict(type='EncoderDecoder', depth=50)\n")
    (tmp_path / "new.py").write_text(
        "from mmengine.config import read_base\nwith read_base():\n    from ._base_.model import *\n"
        "from mmseg.models import ResNetV1c\nmodel.update(backbone=dict(type=ResNetV1c))\n"
    )
    assert read_mmseg_config(tmp_path / "new.py")["model"] == {
        "type": "EncoderDecoder", "depth": 50, "backbone": {"type": "ResNetV1c"}
    }
