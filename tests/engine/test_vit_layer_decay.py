"""Layer-wise learning-rate decay for ViTs (MMSegmentation's `get_layer_id_for_vit` rule) and the
optimizer of a partly frozen backbone: frozen parameters are in no group; the groups are logged."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from segaccel.engine.optim import build_optimizer, param_multipliers

timm = pytest.importorskip("timm")

from segaccel.models import TimmBackbone  # noqa: E402


def vit_segmentor(**backbone_kwargs) -> nn.Module:
    model = nn.Module()
    model.backbone = TimmBackbone(
        "vit_small_patch16_dinov3", out_indices=[0, 2], final_norm=True, model_kwargs={"depth": 3},
        **backbone_kwargs,
    )
    model.decode_head = nn.Conv2d(384, 5, 1)
    return model


def test_vit_layer_ids_and_multipliers_follow_mmsegmentation():
    # num_layers 3 -> ids: embeddings 0, block i -> i + 1, everything else (final norm, head) 4;
    # lr scale 0.65 ** (5 - id - 1); no decay on 1-D parameters and biases
    cfg = {"decay_rate": 0.65, "decay_type": "layer_wise", "num_layers": 3}
    mults = param_multipliers(vit_segmentor(), cfg)
    prefix = "backbone.timm_model."
    assert mults[prefix + "cls_token"] == pytest.approx((0.65**4, 1.0))  # 3-D: decays, as in MMSegmentation
    assert mults[prefix + "reg_token"] == pytest.approx((0.65**4, 1.0))
    assert mults[prefix + "patch_embed.proj.weight"] == pytest.approx((0.65**4, 1.0))
    assert mults[prefix + "patch_embed.proj.bias"] == pytest.approx((0.65**4, 0.0))
    assert mults[prefix + "blocks.0.attn.qkv.weight"] == pytest.approx((0.65**3, 1.0))
    assert mults[prefix + "blocks.2.mlp.fc1.weight"] == pytest.approx((0.65**1, 1.0))
    assert mults[prefix + "blocks.2.norm1.weight"] == pytest.approx((0.65**1, 0.0))
    assert mults[prefix + "norm.weight"] == pytest.approx((1.0, 0.0))
    assert mults["decode_head.weight"] == pytest.approx((1.0, 1.0))
    with pytest.raises(ValueError, match="layer_wise' only"):
        param_multipliers(vit_segmentor(), {"decay_rate": 0.65, "decay_type": "stage_wise", "num_layers": 3})


def test_mmsegmentation_vit_names_get_the_same_ids():
    from segaccel.engine.layer_decay import vit_layer_id

    assert vit_layer_id("backbone.cls_token", 14) == 0 and vit_layer_id("backbone.pos_embed", 14) == 0
    assert vit_layer_id("backbone.patch_embed.projection.weight", 14) == 0
    assert vit_layer_id("backbone.layers.11.ffn.layers.1.weight", 14) == 12
    assert vit_layer_id("backbone.ln1.weight", 14) == 13
    assert vit_layer_id("decode_head.conv_seg.bias", 14) == 13


def test_optimizer_groups_are_logged_and_hold_no_frozen_parameter(caplog):
    model = vit_segmentor(frozen_stages=1)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen  # stem and block 0
    cfg = {
        "optimizer": {"type": "AdamW", "lr": 1e-4, "weight_decay": 0.05},
        "paramwise_cfg": {"decay_rate": 0.9, "num_layers": 3},
    }
    with caplog.at_level(logging.INFO, logger="segaccel"):
        opt = build_optimizer(model, cfg)
    in_groups = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not in_groups & {id(p) for p in frozen}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    fc1 = model.backbone.timm_model.blocks[1].mlp.fc1.weight
    assert by_param[id(fc1)]["lr"] == pytest.approx(1e-4 * 0.9**2)
    text = caplog.text
    assert "optimizer param groups (6;" in text  # layers 2, 3, 4 (head and norm) x decay / no_decay
    for label in ("layer_2_decay", "layer_2_no_decay", "layer_3_decay", "layer_4_decay", "layer_4_no_decay"):
        assert f"  {label}: lr " in text
    assert "layer_0_" not in text and "layer_1_" not in text  # frozen: stem and block 0
    assert "backbone.timm_model.blocks.1.attn.qkv.weight" in text  # first name of layer_2_decay


def test_frozen_backbone_is_not_in_the_optimizer():
    model = vit_segmentor(frozen=True)
    opt = build_optimizer(model, {"optimizer": {"type": "AdamW", "lr": 1e-3, "weight_decay": 1e-4}})
    assert [p for g in opt.param_groups for p in g["params"]] == list(model.decode_head.parameters())
    assert torch.is_tensor(opt.param_groups[0]["params"][0])
