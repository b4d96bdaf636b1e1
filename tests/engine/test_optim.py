"""Paramwise optimizer groups: lr multipliers and decay rules as MMEngine applies them."""

import pytest
import torch
from torch import nn

from segaccel.engine.optim import build_optimizer, param_multipliers


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.backbone.add_module("pos_block", nn.Conv2d(4, 4, 1))
        self.norm = nn.LayerNorm(4)
        self.decode_head = nn.Conv2d(4, 2, 1)


def test_custom_keys_longest_match_first():
    mults = param_multipliers(
        Tiny(),
        {
            "custom_keys": {
                "head": {"lr_mult": 10.0},
                "decode_head.bias": {"lr_mult": 2.0, "decay_mult": 0.0},
                "norm": {"decay_mult": 0.0},
                "pos_block": {"decay_mult": 0.0},
            }
        },
    )
    assert mults["decode_head.weight"] == (10.0, 1.0)
    assert mults["decode_head.bias"] == (2.0, 0.0)  # the longer key wins
    assert mults["norm.weight"] == (1.0, 0.0)
    assert mults["backbone.pos_block.weight"] == (1.0, 0.0)
    assert mults["backbone.0.weight"] == (1.0, 1.0)


def test_norm_and_bias_decay_mult():
    mults = param_multipliers(Tiny(), {"norm_decay_mult": 0.0, "bias_decay_mult": 0.5})
    assert mults["backbone.1.weight"] == (1.0, 0.0)  # BatchNorm
    assert mults["norm.bias"] == (1.0, 0.0)  # LayerNorm: the norm rule comes first
    assert mults["backbone.0.bias"] == (1.0, 0.5)
    assert mults["backbone.0.weight"] == (1.0, 1.0)


def test_build_optimizer_groups_lr_and_decay():
    model = Tiny()
    opt = build_optimizer(
        model,
        {
            "optimizer": {"type": "AdamW", "lr": 1e-3, "weight_decay": 0.01},
            "paramwise_cfg": {"custom_keys": {"head": {"lr_mult": 10.0}, "norm": {"decay_mult": 0.0}}},
        },
    )
    assert isinstance(opt, torch.optim.AdamW)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model.decode_head.weight)]["lr"] == pytest.approx(1e-2)
    assert by_param[id(model.norm.weight)]["weight_decay"] == 0.0
    assert by_param[id(model.backbone[0].weight)]["weight_decay"] == pytest.approx(0.01)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert len(opt.param_groups) == 3  # (1, 1), (10, 1), (1, 0)


def test_sgd_momentum_nesterov_and_unknown_option():
    opt = build_optimizer(
        Tiny(), {"optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9, "nesterov": True}}
    )
    assert opt.param_groups[0]["nesterov"] is True
    with pytest.raises(ValueError, match="unknown options"):
        build_optimizer(Tiny(), {"optimizer": {"type": "SGD", "lr": 0.1}, "paramwise_cfg": {"bogus": 1}})


def convnext_like():
    """A module whose parameter names are timm ConvNeXt's under TimmBackbone (no timm needed)."""
    model = nn.Module()
    backbone = nn.Module()
    timm_model = nn.Module()
    timm_model.add_module("stem_0", nn.Conv2d(3, 4, 4))
    timm_model.add_module("stem_1", nn.LayerNorm(4))
    for i in range(4):
        stage = nn.Module()
        if i > 0:
            stage.downsample = nn.Sequential(nn.LayerNorm(4), nn.Conv2d(4, 4, 2))
        stage.blocks = nn.Sequential(*[nn.Linear(4, 4) for _ in range(6 if i == 2 else 2)])
        timm_model.add_module(f"stages_{i}", stage)
    backbone.timm_model = timm_model
    model.backbone = backbone
    model.decode_head = nn.Conv2d(4, 2, 1)
    return model


def test_stage_wise_decay_matches_mmsegmentation_convnext_rule():
    # MMSegmentation, decay_type stage_wise, num_layers 6: ids 0 (stem and every downsample),
    # stage i -> i + 1, everything else 7; lr scale 0.9 ** (8 - id - 1); no decay on 1-D and biases
    mults = param_multipliers(
        convnext_like(), {"decay_rate": 0.9, "decay_type": "stage_wise", "num_layers": 6}
    )
    assert mults["backbone.timm_model.stem_0.weight"] == pytest.approx((0.9**7, 1.0))
    assert mults["backbone.timm_model.stem_0.bias"] == pytest.approx((0.9**7, 0.0))
    assert mults["backbone.timm_model.stages_2.downsample.1.weight"] == pytest.approx((0.9**7, 1.0))
    assert mults["backbone.timm_model.stages_0.blocks.1.weight"] == pytest.approx((0.9**6, 1.0))
    assert mults["backbone.timm_model.stages_3.blocks.0.weight"] == pytest.approx((0.9**3, 1.0))
    assert mults["backbone.timm_model.stem_1.weight"] == pytest.approx((0.9**7, 0.0))  # 1-D: no decay
    assert mults["decode_head.weight"] == pytest.approx((1.0, 1.0))


def test_layer_wise_decay_and_optimizer_groups():
    model = convnext_like()
    cfg = {"decay_rate": 0.9, "decay_type": "layer_wise", "num_layers": 6}
    mults = param_multipliers(model, cfg)
    # layer ids: stem 0, stage 0 -> 1, stage 1 -> 2, stage 2 block j -> 3 + j // 3, stage 3 -> 6, heads 7
    assert mults["backbone.timm_model.stages_1.downsample.1.weight"][0] == pytest.approx(0.9**5)  # id 2
    assert mults["backbone.timm_model.stages_2.blocks.4.weight"][0] == pytest.approx(0.9**3)  # id 4
    assert mults["backbone.timm_model.stages_3.downsample.1.weight"][0] == pytest.approx(0.9**1)  # id 6
    assert mults["decode_head.bias"] == pytest.approx((1.0, 0.0))
    opt = build_optimizer(
        model, {"optimizer": {"type": "AdamW", "lr": 1e-4, "weight_decay": 0.05}, "paramwise_cfg": cfg}
    )
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model.backbone.timm_model.stem_0.weight)]["lr"] == pytest.approx(1e-4 * 0.9**7)
    assert by_param[id(model.decode_head.bias)]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="cannot be combined"):
        param_multipliers(model, {**cfg, "custom_keys": {"head": {"lr_mult": 10.0}}})
