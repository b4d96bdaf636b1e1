"""MMSegmentation's backbones (ResNetV1c/V1d, Swin, mmpretrain ConvNeXt): shapes, options, and timm
weights loading into them to timm's own features.

Parity with MMSegmentation itself (real checkpoints, logits) is in tests/convert/test_mmseg_zoo.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from segaccel.models import ConvNeXt, ResNet, ResNetV1c, ResNetV1d, SwinTransformer
from segaccel.registry import MODELS

timm = pytest.importorskip("timm")


def _randomise_norms(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)) and m.weight is not None:
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def _save_timm(model: nn.Module, path) -> str:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def test_registered_under_mmsegmentations_names():
    for name, cls in [("ResNet", ResNet), ("ResNetV1c", ResNetV1c), ("ResNetV1d", ResNetV1d)]:
        assert MODELS.get(name) is cls
    assert MODELS.get("SwinTransformer") is SwinTransformer and MODELS.get("ConvNeXt") is ConvNeXt


# --- ResNet -----------------------------------------------------------------------------------------
def test_resnet_v1c_d8_strides_dilations_and_contract_dilation():
    net = ResNetV1c(
        depth=50, base_channels=4, stem_channels=4, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4),
        contract_dilation=True,
    ).eval()
    outs = net(torch.randn(1, 3, 61, 83))
    # output stride 4, 8, 8, 8 (each conv rounds up), channels base * 2**i * 4
    shapes = [tuple(o.shape) for o in outs]
    assert shapes == [(1, 16, 16, 21), (1, 32, 8, 11), (1, 64, 8, 11), (1, 128, 8, 11)]
    assert net.out_channels == (16, 32, 64, 128)
    # the first block of a dilated stage uses half its dilation
    assert net.layer3[0].conv2.dilation == (1, 1) and net.layer3[1].conv2.dilation == (2, 2)
    assert net.layer4[0].conv2.dilation == (2, 2) and net.layer4[2].conv2.dilation == (4, 4)
    stem = {k.rsplit(".", 1)[0] for k in net.state_dict() if k.startswith("stem.")}
    assert stem == {"stem.0", "stem.1", "stem.3", "stem.4", "stem.6", "stem.7"}  # MMSegmentation's names


def test_resnet_multi_grid_sets_the_last_stage_dilations():
    net = ResNetV1c(
        depth=50, base_channels=4, stem_channels=4, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4),
        multi_grid=(1, 2, 4), contract_dilation=True,
    )
    assert [b.conv2.dilation[0] for b in net.layer4] == [1, 2, 4]
    assert [b.conv2.dilation[0] for b in net.layer3][:2] == [1, 2]  # multi_grid only touches the last stage
    with pytest.raises(ValueError, match="one dilation per block"):
        ResNetV1c(depth=50, multi_grid=(1, 2))


def test_resnet18_basic_blocks_plain_stem_and_v1d_shortcut():
    r18 = ResNet(depth=18, base_channels=4, stem_channels=8, out_indices=(1, 3)).eval()
    assert [tuple(o.shape) for o in r18(torch.randn(2, 3, 64, 48))] == [(2, 8, 8, 6), (2, 32, 2, 2)]
    assert "conv1.weight" in r18.state_dict() and "bn1.running_var" in r18.state_dict()
    assert r18.layer3[0].conv2.dilation == (1, 1)
    v1d = ResNetV1d(depth=18, base_channels=4, stem_channels=8)
    assert isinstance(v1d.layer2[0].downsample[0], nn.AvgPool2d)
    assert "layer2.0.downsample.1.weight" in v1d.state_dict()
    with pytest.raises(ValueError, match="deep_stem=True and avg_down=False"):
        ResNetV1c(depth=18, avg_down=True)
    with pytest.raises(ValueError, match="depth must be one of"):
        ResNetV1c(depth=42)


def test_resnet_frozen_stages_and_norm_eval():
    net = ResNetV1c(depth=18, base_channels=4, stem_channels=8, frozen_stages=1, norm_eval=True).train()
    assert not any(p.requires_grad for p in net.stem.parameters())
    assert not any(p.requires_grad for p in net.layer1.parameters())
    assert all(p.requires_grad for p in net.layer2.parameters())
    assert not net.stem.training and not net.layer1.training and net.layer2.training
    assert all(not m.training for m in net.modules() if isinstance(m, nn.BatchNorm2d))  # norm_eval
    before = net.layer3[0].bn1.running_mean.clone()
    net(torch.randn(2, 3, 32, 32))
    assert torch.equal(net.layer3[0].bn1.running_mean, before)  # statistics frozen


@pytest.mark.parametrize(("timm_name", "ours"), [("resnet50c", ResNetV1c), ("resnet18d", ResNetV1d)])
def test_resnet_from_timm_weights_gives_timms_features(tmp_path, timm_name, ours):
    torch.manual_seed(0)
    reference = timm.create_model(timm_name, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))
    _randomise_norms(reference)
    depth = 50 if timm_name == "resnet50c" else 18
    net = ours(depth=depth, pretrained=_save_timm(reference, tmp_path / "w.safetensors"))
    reference.eval(), net.eval()
    x = torch.randn(1, 3, 61, 83)
    with torch.no_grad():
        for a, b in zip(net(x), reference(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    with pytest.raises(RuntimeError, match="do not fit this backbone"):
        ResNetV1c(depth=101, pretrained=str(tmp_path / "w.safetensors"))


# --- Swin -------------------------------------------------------------------------------------------
def _small_swin(**kwargs) -> SwinTransformer:
    args = dict(embed_dims=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7, drop_path_rate=0.0)
    return SwinTransformer(**{**args, **kwargs})


def test_swin_takes_any_input_size_by_corner_padding():
    torch.manual_seed(0)
    net = _small_swin().eval()
    _randomise_norms(net)
    x = torch.randn(1, 3, 61, 83)
    with torch.no_grad():
        outs = net(x)
        padded = net(F.pad(x, (0, 1, 0, 3)))  # what the patch embedding pads to: 64 x 84
    assert [tuple(o.shape) for o in outs] == [(1, 8, 16, 21), (1, 16, 8, 11), (1, 32, 4, 6), (1, 64, 2, 3)]
    for a, b in zip(outs, padded):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    keys = net.state_dict()
    assert "stages.0.blocks.1.attn.w_msa.relative_position_index" in keys and "norm3.weight" in keys
    assert keys["stages.0.downsample.reduction.weight"].shape == (16, 32)


def test_swin_shifts_even_when_the_map_is_one_window():
    """timm drops the shift of a stage whose map is not larger than the window; MMSegmentation does not."""
    torch.manual_seed(0)
    net = _small_swin(depths=(2, 2, 2, 2)).eval()
    block = net.stages[3].blocks[1]
    assert block.attn.shift_size == 3
    tokens = torch.randn(1, 4, 64)  # a 2x2 map: padded to one 7x7 window, shifted, masked
    with torch.no_grad():
        shifted = block.attn(tokens, (2, 2))
        block.attn.shift_size = 0
        unshifted = block.attn(tokens, (2, 2))
    assert not torch.allclose(shifted, unshifted)


def test_swin_from_timm_weights_gives_timms_features(tmp_path):
    """Same features as timm's Swin where both behave alike (maps of whole windows, stages 0-2 at 224):
    the patch-merging channel order and every renamed weight are right."""
    torch.manual_seed(0)
    reference = timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, embed_dim=16, depths=(2, 2, 2, 2),
        num_heads=(1, 2, 2, 4),
    )
    _randomise_norms(reference)
    for name, p in reference.named_parameters():
        if "relative_position_bias_table" in name:
            p.data.normal_(0, 0.5)
    net = SwinTransformer(
        embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), out_indices=(0, 1, 2),
        drop_path_rate=0.0, pretrained=_save_timm(reference, tmp_path / "swin.safetensors"),
    )
    for i in range(3):
        setattr(net, f"norm{i}", nn.Identity())  # timm's features carry no per-output norm
    reference.eval(), net.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, indices=[0, 1, 2], norm=False, intermediates_only=True)
        for a, b in zip(net(x), expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=2e-5)


def test_swin_frozen_stages():
    net = _small_swin(frozen_stages=2).train()
    assert not any(p.requires_grad for p in net.patch_embed.parameters())
    assert not any(p.requires_grad for p in net.stages[1].parameters()) and not net.norm1.weight.requires_grad
    assert all(p.requires_grad for p in net.stages[2].parameters()) and net.norm2.weight.requires_grad


# --- ConvNeXt ---------------------------------------------------------------------------------------
def test_convnext_shapes_norms_and_options():
    net = ConvNeXt(arch={"depths": [1, 1, 2, 1], "channels": [8, 16, 32, 64]}, out_indices=[0, 1, 2, 3],
                   gap_before_final_norm=False, layer_scale_init_value=1.0).eval()
    outs = net(torch.randn(1, 3, 61, 83))
    assert [tuple(o.shape) for o in outs] == [(1, 8, 15, 20), (1, 16, 7, 10), (1, 32, 3, 5), (1, 64, 1, 2)]
    assert "stages.2.1.gamma" in net.state_dict() and "norm3.weight" in net.state_dict()
    pooled = ConvNeXt(arch="atto", out_indices=-1).eval()(torch.randn(2, 3, 64, 64))
    assert len(pooled) == 1 and pooled[0].shape == (2, 320)  # classification: normed global average
    frozen = ConvNeXt(arch="atto", frozen_stages=2).train()
    assert not any(p.requires_grad for p in frozen.downsample_layers[1].parameters())
    assert not frozen.stages[1].training and frozen.stages[2].training
    with pytest.raises(ValueError, match="arch 'teeny'"):
        ConvNeXt(arch="teeny")


def test_convnext_from_timm_weights_gives_timms_features(tmp_path):
    torch.manual_seed(0)
    reference = timm.create_model("convnext_tiny", dims=(8, 16, 32, 64), depths=(1, 1, 2, 1))
    _randomise_norms(reference)
    for name, p in reference.named_parameters():
        if name.endswith("gamma"):
            p.data.uniform_(0.5, 1.5)
    net = ConvNeXt(
        arch={"depths": [1, 1, 2, 1], "channels": [8, 16, 32, 64]}, out_indices=[0, 1, 2, 3],
        gap_before_final_norm=False, pretrained=_save_timm(reference, tmp_path / "convnext.safetensors"),
    )
    for i in range(4):
        setattr(net, f"norm{i}", nn.Identity())
    reference.eval(), net.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, indices=4, norm=False, intermediates_only=True)
        for a, b in zip(net(x), expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
