"""MixVisionTransformer: shapes on odd sizes, parameter counts, MMSegmentation numerics and names."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from segaccel.models.backbones.mit import MIT_SETTINGS, DropPath, MixVisionTransformer


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a conv with padding kernel // 2."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def test_b0_shapes_on_odd_non_square_input():
    torch.manual_seed(0)
    model = MixVisionTransformer(arch="b0").eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 67, 93))
    # by hand: 67 → (67+6-7)//4+1 = 17 → 9 → 5 → 3 ; 93 → 24 → 12 → 6 → 3
    assert [tuple(o.shape) for o in outs] == [(1, 32, 17, 24), (1, 64, 9, 12), (1, 160, 5, 6), (1, 256, 3, 3)]
    h, w, expected = 67, 93, []
    for k, s in zip((7, 3, 3, 3), (4, 2, 2, 2)):
        h, w = conv_out(h, k, s), conv_out(w, k, s)
        expected.append((h, w))
    assert [tuple(o.shape[2:]) for o in outs] == expected
    assert model.out_channels == (32, 64, 160, 256)


def test_out_indices_subset_and_int():
    model = MixVisionTransformer(arch="b0", out_indices=(1, 3)).eval()
    outs = model(torch.randn(2, 3, 40, 56))
    assert [tuple(o.shape) for o in outs] == [(2, 64, 5, 7), (2, 256, 2, 2)]
    assert model.out_channels == (64, 256)
    single = MixVisionTransformer(arch="b0", out_indices=0)
    assert [tuple(o.shape) for o in single(torch.randn(1, 3, 32, 32))] == [(1, 32, 8, 8)]
    with pytest.raises(ValueError, match="out_indices"):
        MixVisionTransformer(arch="b0", out_indices=(4,))


def expected_params(
    embed_dims, num_layers, num_heads, patch_sizes=(7, 3, 3, 3), sr_ratios=(8, 4, 2, 1)
) -> int:
    """Parameter count of a MiT, counted layer by layer from the architecture."""
    total, c_in = 0, 3
    for depth, heads, k, sr in zip(num_layers, num_heads, patch_sizes, sr_ratios):
        c, hidden = embed_dims * heads, 4 * embed_dims * heads
        total += c_in * c * k * k + c + 2 * c  # patch embedding conv + LN
        block = 2 * c  # norm1
        block += 3 * c * c + 3 * c + c * c + c  # in_proj + out_proj
        if sr > 1:
            block += c * c * sr * sr + c + 2 * c  # spatial reduction conv + LN
        block += 2 * c  # norm2
        block += c * hidden + hidden + hidden * 9 + hidden + hidden * c + c  # Mix-FFN
        total += depth * block + 2 * c  # blocks + stage LN
        c_in = c
    return total


# exact counts of this implementation; they round to the SegFormer paper's encoder sizes
# (Table 1: 3.4*, 13.1, 24.2, 44.0, 60.8, 81.4 M; *3.3 M is also what transformers' mit-b0 encoder holds)
KNOWN_PARAMS = {
    "b0": 3_319_392,
    "b1": 13_151_424,
    "b2": 24_196_288,
    "b3": 44_072_128,
    "b4": 60_842_688,
    "b5": 81_443_008,
}


@pytest.mark.parametrize("arch", list(MIT_SETTINGS))
def test_arch_parameter_counts(arch):
    with torch.device("meta"):  # no memory, no init cost: only shapes
        model = MixVisionTransformer(arch=arch)
    count = sum(p.numel() for p in model.parameters())
    assert count == KNOWN_PARAMS[arch] == expected_params(**MIT_SETTINGS[arch])


def test_b0_param_count_matches_published_size():
    assert abs(KNOWN_PARAMS["b0"] / 1e6 - 3.32) < 0.01


def test_arch_preset_and_explicit_override():
    model = MixVisionTransformer(arch="b1", num_layers=(1, 1, 1, 1))
    assert model.embed_dims == 64 and model.num_heads == (1, 2, 5, 8)
    assert [len(stage[1]) for stage in model.layers] == [1, 1, 1, 1]
    plain = MixVisionTransformer(num_layers=(1, 1, 1, 1))  # MMSegmentation's class defaults
    assert plain.stage_channels == (64, 128, 256, 512)
    with pytest.raises(ValueError, match="arch='b9'"):
        MixVisionTransformer(arch="b9")


def test_state_dict_names_follow_mmsegmentation():
    keys = set(MixVisionTransformer(arch="b0").state_dict())
    for key in (
        "layers.0.0.projection.weight",
        "layers.0.0.norm.bias",
        "layers.0.1.0.norm1.weight",
        "layers.0.1.0.attn.attn.in_proj_weight",
        "layers.0.1.0.attn.attn.in_proj_bias",
        "layers.0.1.0.attn.attn.out_proj.weight",
        "layers.0.1.0.attn.sr.weight",
        "layers.0.1.0.attn.norm.weight",
        "layers.0.1.0.norm2.bias",
        "layers.0.1.0.ffn.layers.0.weight",
        "layers.0.1.0.ffn.layers.1.weight",
        "layers.0.1.0.ffn.layers.4.bias",
        "layers.3.2.weight",
    ):
        assert key in keys, key
    assert "layers.3.1.0.attn.sr.weight" not in keys  # sr_ratio 1 in the last stage
    assert MixVisionTransformer(arch="b0").layers[0][1][0].attn.attn.in_proj_weight.shape == (96, 32)


@pytest.mark.parametrize("stage", [0, 2, 3])  # 1 head, sr 8; 5 heads, sr 2; 8 heads, sr 1
def test_attention_equals_nn_multihead_attention(stage):
    """MMSegmentation computes the attention with nn.MultiheadAttention; SDPA must agree."""
    torch.manual_seed(0)
    model = MixVisionTransformer(arch="b0").eval()  # eval: no stochastic depth
    attn = model.layers[stage][1][0].attn
    dims, heads = model.stage_channels[stage], model.num_heads[stage]
    mha = nn.MultiheadAttention(dims, heads, batch_first=True).eval()
    mha.load_state_dict(attn.attn.state_dict())
    hw = (9, 13) if stage == 0 else (5, 7)
    x = torch.randn(2, hw[0] * hw[1], dims)
    with torch.no_grad():
        ours = attn(x, hw, identity=torch.zeros_like(x))
        if attn.sr_ratio > 1:
            kv = attn.norm(attn.sr(x.transpose(1, 2).reshape(2, dims, *hw)).flatten(2).transpose(1, 2))
        else:
            kv = x
        ref = mha(x, kv, kv, need_weights=False)[0]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = MixVisionTransformer(arch="b0", num_layers=(1, 2, 1, 1), drop_path_rate=0.1).train()
    outs = model(torch.randn(2, 3, 35, 51))
    sum(o.square().mean() for o in outs).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert model.layers[0][0].projection.weight.grad.abs().sum() > 0


def test_drop_path():
    x = torch.ones(1000, 4)
    drop = DropPath(0.5)
    assert drop.eval()(x) is x
    out = drop.train()(x)
    kept = out[:, 0] != 0
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert (out[kept] == 2.0).all() and 350 < int(kept.sum()) < 650
    assert (out == out[:, :1]).all()  # whole samples are dropped


def test_layer_norm_eps_is_recorded():
    model = MixVisionTransformer(arch="b0", layer_norm_eps=1e-5)
    eps = {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}
    assert eps == {1e-5}
    assert {m.eps for m in MixVisionTransformer(arch="b0").modules() if isinstance(m, nn.LayerNorm)} == {1e-6}


def test_init_follows_mmsegmentation():
    torch.manual_seed(0)
    model = MixVisionTransformer(arch="b1")
    out_proj = model.layers[2][1][0].attn.attn.out_proj
    # mmcv's trunc_normal_init(std=.02) truncates at ±2 (absolute), i.e. practically a normal(0, .02)
    assert abs(out_proj.weight.std().item() - 0.02) < 0.001
    assert abs(out_proj.weight.mean().item()) < 0.001
    assert (out_proj.bias == 0).all()
    conv = model.layers[0][0].projection  # fan_out = 7 * 7 * 64
    assert abs(conv.weight.std().item() - (2 / (7 * 7 * 64)) ** 0.5) < 0.003
    assert (model.layers[1][2].weight == 1).all()


def test_pretrained_safetensors_loads_strictly(tmp_path):
    torch.manual_seed(0)
    source = MixVisionTransformer(arch="b0").eval()
    path = tmp_path / "mit_b0.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = MixVisionTransformer(arch="b0", pretrained=str(path)).eval()
    x = torch.randn(1, 3, 33, 45)
    with torch.no_grad():
        for a, b in zip(source(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)

    prefixed = tmp_path / "segmentor.safetensors"  # keys of a whole segmentor's backbone
    save_file({f"backbone.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(prefixed))
    MixVisionTransformer(arch="b0", pretrained=str(prefixed))

    with pytest.raises(RuntimeError, match="does not match"):
        MixVisionTransformer(arch="b0", num_layers=(3, 2, 2, 2), pretrained=str(path))
    with pytest.raises(FileNotFoundError, match="issue 4/7"):
        MixVisionTransformer(arch="b0", pretrained="nvidia/mit-b0")
