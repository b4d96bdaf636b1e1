"""Licences travel with weights: a segmentor built on DINOv3 weights (timm's pretrained config says
`dinov3-license`) records it in config.json, and its model card says so, through save/reload."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import save_file

timm = pytest.importorskip("timm")

from segaccel.model_card import build_model_card  # noqa: E402
from segaccel.models import Segmentor  # noqa: E402

SHA = "89abcdef0123456789abcdef0123456789abcdef"


def cache_repo(cache, repo_id: str, model: torch.nn.Module) -> None:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "snapshots" / SHA).mkdir(parents=True)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(repo / "snapshots" / SHA / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)


def segmentor(backbone: dict, channels: int) -> Segmentor:
    head = dict(
        type="BNHead", in_channels=[channels], in_index=[0], input_transform="resize_concat",
        channels=channels, dropout_ratio=0, num_classes=3,
    )  # fmt: skip
    return Segmentor(backbone=backbone, decode_head=head)


VIT = dict(
    type="TimmBackbone", model_name="vit_small_patch16_dinov3", out_indices=[-1], model_kwargs={"depth": 1}
)
CONVNEXT = dict(
    type="TimmBackbone", model_name="convnext_tiny", out_indices=[3],
    model_kwargs={"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]},
)  # fmt: skip


def test_dinov3_licence_goes_into_config_json_and_the_model_card(offline_cache, tmp_path):
    torch.manual_seed(0)
    cache_repo(offline_cache, "timm/vit_small_patch16_dinov3.lvd1689m", timm.create_model(
        "vit_small_patch16_dinov3", pretrained=False, depth=1
    ))
    model = segmentor({**VIT, "pretrained": "timm/vit_small_patch16_dinov3.lvd1689m"}, 384)
    assert model.backbone.weights_license == "dinov3-license"
    assert model.config["backbone"]["weights_license"] == "dinov3-license"

    model.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["backbone"]["pretrained"] is None  # the weights are in model.safetensors now
    assert config["backbone"]["weights_license"] == "dinov3-license"  # their licence stays
    card = ModelCard.load(tmp_path / "saved" / "README.md")
    assert card.data.license == "other" and card.data.license_name == "dinov3-license"
    assert card.data.license_link == "https://ai.meta.com/resources/models-and-libraries/dinov3-license/"
    assert "## License" in card.text and "stay under it" in card.text

    reloaded = Segmentor.from_pretrained(tmp_path / "saved")
    assert reloaded.backbone.weights_license == "dinov3-license"
    reloaded.save_pretrained(tmp_path / "again")
    assert ModelCard.load(tmp_path / "again" / "README.md").data.license_name == "dinov3-license"


def test_dinov3_convnext_weights_by_hub_id_carry_the_licence_too(offline_cache):
    torch.manual_seed(1)
    kwargs = CONVNEXT["model_kwargs"]
    cache_repo(offline_cache, "timm/convnext_tiny.dinov3_lvd1689m", timm.create_model(
        "convnext_tiny", pretrained=False, **kwargs
    ))
    model = segmentor({**CONVNEXT, "pretrained": "timm/convnext_tiny.dinov3_lvd1689m"}, 32)
    assert model.config["backbone"]["weights_license"] == "dinov3-license"
    plain = segmentor({**CONVNEXT, "pretrained": None}, 32)  # random init: no weights, no licence
    assert plain.config["backbone"]["weights_license"] is None


def test_card_licence_defaults_and_override():
    config = segmentor(dict(VIT), 384).config_for_saving()
    assert build_model_card(config).data.license == "apache-2.0"  # segaccel's own, for weights from scratch
    dinov2 = {**config, "backbone": {**config["backbone"], "weights_license": "apache-2.0"}}
    assert build_model_card(dinov2).data.license == "apache-2.0"
    card = build_model_card(config, license="cc-by-nc-4.0")
    assert card.data.license == "cc-by-nc-4.0" and card.data.license_name is None
    eupe = {**config["backbone"], "weights_license": "fair-noncommercial-research-license"}  # DINOv3's tiny
    fair = build_model_card({**config, "backbone": eupe})
    assert fair.data.license == "other" and fair.data.license_name == "fair-noncommercial-research-license"
