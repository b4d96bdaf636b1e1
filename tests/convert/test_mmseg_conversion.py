"""MMSegmentation model-zoo checkpoints: our names are theirs; files are read by the restricted reader."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from segaccel.config import load_config
from segaccel.convert import convert_mmseg_state_dict, load_mmseg_checkpoint
from segaccel.models import Segmentor
from segaccel.registry import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]

# names and shapes in MMSegmentation's segformer_mit-b0 ADE20K checkpoint (150 classes)
MMSEG_B0_KEYS = {
    "backbone.layers.0.0.projection.weight": (32, 3, 7, 7),
    "backbone.layers.0.0.norm.weight": (32,),
    "backbone.layers.0.1.0.norm1.weight": (32,),
    "backbone.layers.0.1.0.attn.attn.in_proj_weight": (96, 32),
    "backbone.layers.0.1.0.attn.attn.in_proj_bias": (96,),
    "backbone.layers.0.1.0.attn.attn.out_proj.weight": (32, 32),
    "backbone.layers.0.1.0.attn.sr.weight": (32, 32, 8, 8),
    "backbone.layers.0.1.0.attn.norm.weight": (32,),
    "backbone.layers.0.1.0.ffn.layers.0.weight": (128, 32, 1, 1),
    "backbone.layers.0.1.0.ffn.layers.1.weight": (128, 1, 3, 3),
    "backbone.layers.0.1.0.ffn.layers.4.weight": (32, 128, 1, 1),
    "backbone.layers.3.1.1.attn.attn.in_proj_weight": (768, 256),
    "backbone.layers.3.2.weight": (256,),
    "decode_head.convs.0.conv.weight": (256, 32, 1, 1),
    "decode_head.convs.3.bn.running_var": (256,),
    "decode_head.fusion_conv.conv.weight": (256, 1024, 1, 1),
    "decode_head.fusion_conv.bn.num_batches_tracked": (),
    "decode_head.conv_seg.weight": (150, 256, 1, 1),
}

TINY = {
    "model": {
        "type": "Segmentor",
        "backbone": {
            "type": "MixVisionTransformer",
            "embed_dims": 8,
            "num_layers": [1, 1, 1, 1],
            "num_heads": [1, 1, 1, 1],
            "sr_ratios": [2, 2, 1, 1],
            "drop_path_rate": 0.0,
            "pretrained": "mit_b0_imagenet.pth",
        },
        "decode_head": {
            "type": "SegformerHead",
            "in_channels": [8, 8, 8, 8],
            "channels": 8,
            "num_classes": 3,
        },
        "data_preprocessor": {
            "mean": [123.675, 116.28, 103.53],
            "std": [58.395, 57.12, 57.375],
            "size_divisor": 32,
        },
    },
    "test_dataloader": {"dataset": {"pipeline": [{"type": "Resize", "scale": [64, 32], "keep_ratio": True}]}},
}


def test_our_segformer_has_mmsegmentations_names_and_shapes():
    cfg = load_config(REPO_ROOT / "configs" / "_base_" / "models" / "segformer_mit-b0.yaml")["model"]
    cfg = {k: v for k, v in cfg.items() if k != "type"}
    state = Segmentor(**{**cfg, "decode_head": {**cfg["decode_head"], "num_classes": 150}}).state_dict()
    for key, shape in MMSEG_B0_KEYS.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key


def _source_model() -> Segmentor:
    torch.manual_seed(0)
    args = {k: v for k, v in TINY["model"].items() if k != "type"}
    model = Segmentor(**{**args, "backbone": {**args["backbone"], "pretrained": None}})
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_()
    return model.eval()


def test_load_mmseg_checkpoint_unwraps_the_state_dict_and_keeps_classes_and_palette(tmp_path):
    model = _source_model()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # saved from DDP
    state["data_preprocessor.mean"] = torch.zeros(3, 1, 1)
    meta = {"CLASSES": ("sky", "road", "car"), "PALETTE": [[1, 2, 3], [4, 5, 6], [7, 8, 9]], "iter": 160000}
    torch.save({"meta": meta, "state_dict": state}, tmp_path / "ckpt.pth")
    ckpt = load_mmseg_checkpoint(tmp_path / "ckpt.pth")
    assert ckpt["classes"] == ["sky", "road", "car"] and ckpt["palette"][2] == [7, 8, 9]
    assert sorted(ckpt["state_dict"]) == sorted(model.state_dict())
    # mmseg 1.x keeps them under meta.dataset_meta
    torch.save(
        {"meta": {"dataset_meta": {"classes": ["a", "b", "c"]}}, "state_dict": state}, tmp_path / "v1.pth"
    )
    assert load_mmseg_checkpoint(tmp_path / "v1.pth")["classes"] == ["a", "b", "c"]
    assert convert_mmseg_state_dict({"module.x": torch.ones(1)}).keys() == {"x"}


class _HistoryBuffer:
    """Stands for mmengine's objects in a 1.x training checkpoint (message_hub): not weights."""

    def __init__(self) -> None:
        self.log = [1.0, 2.0]


def test_checkpoints_with_other_objects_load_their_weights_and_keep_placeholders(tmp_path):
    model = _source_model()
    torch.save({"state_dict": model.state_dict(), "message_hub": _HistoryBuffer()}, tmp_path / "x.pth")
    ckpt = load_mmseg_checkpoint(tmp_path / "x.pth")
    assert sorted(ckpt["state_dict"]) == sorted(model.state_dict())
    assert ckpt["classes"] is None and ckpt["config_text"] is None


def test_convert_checkpoint_script_turns_an_mmseg_checkpoint_into_a_segaccel_repo(tmp_path, capsys):
    model = _source_model()
    meta = {"CLASSES": ("sky", "road", "car"), "PALETTE": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}
    torch.save({"meta": meta, "state_dict": model.state_dict()}, tmp_path / "segformer_tiny.pth")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))

    spec = importlib.util.spec_from_file_location(
        "convert_checkpoint", REPO_ROOT / "scripts" / "convert_checkpoint.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = script.main(
        [str(tmp_path / "segformer_tiny.pth"), str(tmp_path / "out"), "--config", str(tmp_path / "tiny.yaml")]
    )
    assert "reloaded logits differ by at most 0" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "config.yaml",
        "model.safetensors",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "sky", "1": "road", "2": "car"} and config["palette"][1] == [4, 5, 6]
    assert config["backbone"]["pretrained"] is None  # the converted model needs no ImageNet weights
    assert config["test_pipeline"] == [{"type": "Resize", "scale": [64, 32], "keep_ratio": True}]
    loaded = Segmentor.from_pretrained(out)
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(ConfigError, match="carries no config: pass --config"):  # a 0.x file without one
        script.main([str(tmp_path / "segformer_tiny.pth"), str(tmp_path / "out2")])
