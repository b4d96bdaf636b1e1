"""MultiLevelNeck, BNHead and DPTHead: outputs against the operations written out by hand (with the
modules' own weights), MMSegmentation's/DINOv2's parameter names and shapes, non-square grids."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segaccel.models import BNHead, DPTHead, MultiLevelNeck
from segaccel.structures import PixelData, SegDataSample


def randomize_norms(module: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (the defaults hide mistakes)."""
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))


# --- MultiLevelNeck --------------------------------------------------------------------------------
def test_multilevel_neck_by_hand():
    torch.manual_seed(0)
    neck = MultiLevelNeck(in_channels=[8, 8, 8, 8], out_channels=6, scales=[4, 2, 1, 0.5]).eval()
    assert sorted(k for k in neck.state_dict() if k.endswith("weight"))[:2] == [
        "convs.0.conv.weight",
        "convs.1.conv.weight",
    ]
    feats = [torch.randn(2, 8, 7, 9) for _ in range(4)]
    outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 6, 28, 36), (2, 6, 14, 18), (2, 6, 7, 9), (2, 6, 3, 4)]
    for i, (x, scale) in enumerate(zip(feats, [4, 2, 1, 0.5])):
        lat = neck.lateral_convs[i].conv
        y = F.conv2d(x, lat.weight, lat.bias)
        y = F.interpolate(y, scale_factor=scale, mode="bilinear", align_corners=False)
        conv = neck.convs[i].conv
        torch.testing.assert_close(outs[i], F.conv2d(y, conv.weight, conv.bias, padding=1))


def test_multilevel_neck_single_input_feeds_every_scale_and_xavier_init():
    neck = MultiLevelNeck(in_channels=[4], out_channels=4, scales=[2, 1]).eval()
    a, b = neck([torch.randn(1, 4, 5, 6)])
    assert a.shape == (1, 4, 10, 12) and b.shape == (1, 4, 5, 6)
    w = neck.convs[0].conv.weight
    bound = (6 / (4 * 9 + 4 * 9)) ** 0.5  # Xavier-uniform over fan_in + fan_out
    assert w.abs().max() <= bound and w.abs().max() > 0.5 * bound and not neck.convs[0].conv.bias.any()
    with pytest.raises(ValueError, match="inputs for 2 scales"):
        MultiLevelNeck(in_channels=[4, 4, 4], out_channels=4, scales=[2, 1])


# --- BNHead ------------------------------------------------------------------------------------------
def bn_head(**kwargs) -> BNHead:
    args = dict(
        in_channels=[4, 4, 4, 4],
        in_index=[0, 1, 2, 3],
        input_transform="resize_concat",
        channels=16,
        dropout_ratio=0,
        num_classes=5,
        align_corners=False,
    )
    return BNHead(**{**args, **kwargs})


def test_bn_head_is_concat_batchnorm_and_a_1x1_conv():
    torch.manual_seed(1)
    head = bn_head()
    randomize_norms(head)
    head.eval()
    assert set(head.state_dict()) == {
        "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
        "conv_seg.weight", "conv_seg.bias",
    }  # fmt: skip
    feats = [torch.randn(2, 4, *size) for size in [(7, 10), (7, 10), (4, 5), (7, 10)]]
    logits = head(feats)
    x = torch.cat([F.interpolate(f, size=(7, 10), mode="bilinear", align_corners=False) for f in feats], 1)
    bn = head.bn
    x = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    x = x * bn.weight[:, None, None] + bn.bias[:, None, None]
    expected = F.conv2d(x, head.conv_seg.weight, head.conv_seg.bias)
    torch.testing.assert_close(logits, expected)


def test_bn_head_dinov2_linear_selects_the_last_level_and_resize_factors():
    torch.manual_seed(2)
    linear = bn_head(in_channels=[4], in_index=[3], channels=4).eval()
    feats = [torch.randn(1, 4, 7, 10) for _ in range(4)]
    assert linear(feats).shape == (1, 5, 7, 10)
    scaled = bn_head(in_channels=[4, 4], in_index=[0, 1], channels=8, resize_factors=[2, 0.5]).eval()
    out = scaled([torch.randn(1, 4, 6, 8), torch.randn(1, 4, 6, 8)])
    assert out.shape == (1, 5, 12, 16)  # the first level, doubled, sets the size
    with pytest.raises(ValueError, match="must equal the input channels"):
        bn_head(channels=8)


def test_bn_head_dinov3_order_drops_out_before_the_norm():
    torch.manual_seed(3)
    head = bn_head(dropout_ratio=0.5, dropout_before_norm=True).train()
    feats = [torch.randn(2, 4, 5, 6) for _ in range(4)]
    torch.manual_seed(4)
    out = head(feats)
    torch.manual_seed(4)
    x = head.dropout(torch.cat(feats, 1))
    x = F.batch_norm(x, None, None, head.bn.weight, head.bn.bias, training=True, eps=head.bn.eps)
    torch.testing.assert_close(out, F.conv2d(x, head.conv_seg.weight, head.conv_seg.bias))


def test_bn_head_loss_on_a_non_square_batch():
    head = bn_head().train()
    feats = [torch.randn(2, 4, 7, 10, requires_grad=True) for _ in range(4)]
    samples = [SegDataSample(gt_sem_seg=PixelData(torch.randint(0, 5, (1, 97, 131)))) for _ in range(2)]
    losses = head.loss(feats, samples)
    losses["loss_ce"].backward()
    assert torch.isfinite(losses["loss_ce"]) and feats[0].grad is not None


# --- DPTHead ----------------------------------------------------------------------------------------
def dpt(readout: str = "project", **kwargs) -> DPTHead:
    args = dict(
        in_channels=[32, 32, 32, 32],
        in_index=[0, 1, 2, 3],
        channels=8,
        embed_dims=16,
        post_process_channels=[4, 6, 8, 10],
        readout_type=readout,
        num_classes=3,
        dropout_ratio=0,
    )
    return DPTHead(**{**args, **kwargs})


def test_dpt_head_has_mmsegmentations_module_names():
    head = dpt()
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    expected = {
        "reassemble_blocks.projects.0.conv.weight": (4, 16, 1, 1),
        "reassemble_blocks.projects.3.conv.bias": (10,),
        "reassemble_blocks.resize_layers.0.weight": (4, 4, 4, 4),  # ConvTranspose2d x4
        "reassemble_blocks.resize_layers.1.weight": (6, 6, 2, 2),  # ConvTranspose2d x2
        "reassemble_blocks.resize_layers.3.weight": (10, 10, 3, 3),  # stride-2 conv
        "reassemble_blocks.readout_projects.2.0.weight": (16, 32),
        "convs.3.conv.weight": (8, 10, 3, 3),
        "fusion_blocks.0.project.conv.bias": (8,),
        "fusion_blocks.0.res_conv_unit2.conv1.conv.weight": (8, 8, 3, 3),
        "fusion_blocks.1.res_conv_unit1.conv2.bn.running_var": (8,),
        "project.conv.weight": (8, 8, 3, 3),
        "project.bn.weight": (8,),
        "conv_seg.weight": (3, 8, 1, 1),
    }
    for key, shape in expected.items():
        assert shapes.get(key) == shape, key
    assert not any(k.startswith("fusion_blocks.0.res_conv_unit1") for k in shapes)
    assert "convs.0.conv.bias" not in shapes and "reassemble_blocks.resize_layers.2.weight" not in shapes


def _preact(unit, x):
    """x + (ReLU -> conv -> BN) twice."""
    y = x
    for cm in (unit.conv1, unit.conv2):
        bn = cm.bn
        y = F.conv2d(F.relu(y), cm.conv.weight, padding=1)
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
    return x + y


def test_dpt_head_by_hand_on_a_non_square_grid():
    torch.manual_seed(5)
    head = dpt()
    randomize_norms(head)
    head.eval()
    c, grid = 16, (7, 9)  # 97x131 through a patch-16 ViT
    feats = [torch.randn(2, 2 * c, *grid) for _ in range(4)]
    logits = head(feats)
    assert logits.shape == (2, 3, 64, 80)  # the 4x5 level doubled by each of the four fusion blocks

    # reassemble: [patch, cls] -> Linear + GELU -> 1x1 conv -> resize layer
    rb = head.reassemble_blocks
    levels = []
    for i, x in enumerate(feats):
        lin = rb.readout_projects[i][0]
        tokens = F.gelu(F.linear(x.flatten(2).transpose(1, 2), lin.weight, lin.bias))
        y = tokens.transpose(1, 2).reshape(2, c, *grid)
        y = F.conv2d(y, rb.projects[i].conv.weight, rb.projects[i].conv.bias)
        levels.append(rb.resize_layers[i](y))
    assert [tuple(t.shape[2:]) for t in levels] == [(28, 36), (14, 18), (7, 9), (4, 5)]
    levels = [F.conv2d(t, head.convs[i].conv.weight, padding=1) for i, t in enumerate(levels)]

    def fuse(block, x, skip=None):
        if skip is not None:
            skip = F.interpolate(skip, size=x.shape[2:], mode="bilinear", align_corners=False)
            x = x + _preact(block.res_conv_unit1, skip)
        x = _preact(block.res_conv_unit2, x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return F.conv2d(x, block.project.conv.weight, block.project.conv.bias)

    out = fuse(head.fusion_blocks[0], levels[3])  # 4x5 -> 8x10
    for i in range(1, 4):
        out = fuse(head.fusion_blocks[i], out, levels[3 - i])  # 16x20, 32x40, 64x80
    bn = head.project.bn
    out = F.conv2d(out, head.project.conv.weight, padding=1)
    out = F.relu(F.batch_norm(out, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))
    torch.testing.assert_close(logits, F.conv2d(out, head.conv_seg.weight, head.conv_seg.bias))


def test_dpt_head_readouts_and_class_token_errors():
    torch.manual_seed(6)
    c = 16
    patches, cls = torch.randn(1, c, 4, 6), torch.randn(1, c, 1, 1).expand(1, c, 4, 6)
    with_cls = [torch.cat([patches, cls], 1)] * 4
    ignore = dpt("ignore").eval()
    add = dpt("add").eval()
    add.load_state_dict(ignore.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ignore(with_cls), ignore([patches] * 4))  # the class token is dropped
        torch.testing.assert_close(add(with_cls), ignore([patches + cls] * 4))  # or added
    with pytest.raises(ValueError, match="readout 'project' needs 32 \\(TimmBackbone with_cls_token\\)"):
        dpt("project")([patches] * 4)
    with pytest.raises(ValueError, match="readout_type"):
        dpt("mean")
