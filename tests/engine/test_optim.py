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
