"""Exported model folders: what `from_pretrained` reads, strict `metrics.json`, hand-written cards kept."""

import json

import torch

from segaccel.config import load_config
from segaccel.engine.build import model_config
from segaccel.engine.export import export_model_folder
from segaccel.models import Segmentor
from segaccel.registry import MODELS


def strict_json(text):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_export_writes_a_loadable_folder_with_strict_metrics(tiny_config, tmp_path):
    cfg = load_config(tiny_config)
    torch.manual_seed(3)
    model = MODELS.build(model_config(cfg))
    out = tmp_path / "model"
    metrics = {"aAcc": 90.5, "mIoU": 61.25, "mDice": float("nan")}
    per_class = {"IoU": {"background": 88.0, "circle": None}}
    export_model_folder(out, model, cfg, metrics, per_class, iteration=6)

    assert strict_json((out / "metrics.json").read_text()) == {
        "aAcc": 90.5,
        "mIoU": 61.25,
        "mDice": None,
        "per_class": {"IoU": {"background": 88.0, "circle": None}},
    }
    loaded = Segmentor.from_pretrained(str(out))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    card = (out / "README.md").read_text()
    assert "| mIoU | aAcc |\n| --- | --- |\n| 61.25 | 90.50 |" in card  # the null mDice is left out
    assert (out / "config.yaml").is_file()

    # exported again (a better model later): replaced whole, a README written by hand is kept
    (out / "README.md").write_text("# my notes\n")
    export_model_folder(out, model, cfg, None, None, iteration=8)
    files = ["README.md", "config.json", "config.yaml", "model.safetensors"]  # no metrics.json this time
    assert sorted(p.name for p in out.iterdir()) == files
    assert (out / "README.md").read_text() == "# my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "tiny.yaml"]  # no temporary left
