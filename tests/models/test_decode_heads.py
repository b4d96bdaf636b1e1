"""FCN, PSP, ASPP, DeepLabV3+ and UPer heads and the FPN neck: shapes, MMSegmentation names, options,
and computations by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segaccel.models import FPN, ASPPHead, DepthwiseSeparableASPPHead, FCNHead, PSPHead, UPerHead
from segaccel.registry import MODELS
from segaccel.structures import PixelData, SegDataSample

BN = {"type": "BN", "requires_grad": True}
CHANNELS = [8, 12, 16, 24]
SIZES = [(17, 23), (9, 12), (5, 6), (3, 3)]  # stride 4..32 of a (67, 91) image, rounded up


def feats(n: int = 2) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(n, c, *hw) for c, hw in zip(CHANNELS, SIZES)]


def samples(n: int, hw: tuple[int, int], num_classes: int) -> list[SegDataSample]:
    torch.manual_seed(1)
    labels = torch.randint(0, num_classes, (n, 1, *hw))
    labels[0, 0, :3] = 255
    return [SegDataSample(gt_sem_seg=PixelData(label)) for label in labels]


HEADS = {
    "FCNHead": dict(type="FCNHead", in_channels=16, in_index=2, channels=8, num_convs=2, dilation=2),
    "PSPHead": dict(type="PSPHead", in_channels=24, in_index=3, channels=8, pool_scales=[1, 2, 3, 6]),
    "ASPPHead": dict(type="ASPPHead", in_channels=24, in_index=3, channels=8, dilations=[1, 2, 3]),
    "DepthwiseSeparableASPPHead": dict(
        type="DepthwiseSeparableASPPHead",
        in_channels=24,
        in_index=3,
        channels=8,
        dilations=[1, 2, 3],
        c1_in_channels=8,
        c1_channels=4,
    ),
    "UPerHead": dict(
        type="UPerHead", in_channels=CHANNELS, in_index=[0, 1, 2, 3], channels=8, pool_scales=[1, 2]
    ),
}
OUT_SIZE = {"FCNHead": SIZES[2], "PSPHead": SIZES[3], "ASPPHead": SIZES[3]}


@pytest.mark.parametrize("name", list(HEADS))
def test_every_head_gives_logits_and_losses_that_backpropagate(name):
    head = MODELS.build({**HEADS[name], "num_classes": 5, "norm_cfg": BN})
    x = feats()
    logits = head(x)
    assert logits.shape == (2, 5, *OUT_SIZE.get(name, SIZES[0]))
    losses = head.loss(x, samples(2, (33, 45), 5))
    assert set(losses) == {"loss_ce", "acc_seg"}
    losses["loss_ce"].backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)
    pred = head.eval().predict(x, [{"img_shape": (60, 88), "pad_shape": (64, 96)}])
    assert pred.shape == (2, 5, 64, 96)


def test_mmsegmentation_state_dict_names():
    def keys(name: str) -> set[str]:
        return set(MODELS.build({**HEADS[name], "num_classes": 3, "norm_cfg": BN}).state_dict())

    assert {
        "convs.0.conv.weight",
        "convs.1.bn.running_mean",
        "conv_cat.conv.weight",
        "conv_seg.bias",
    } <= keys("FCNHead")
    assert {"psp_modules.3.1.conv.weight", "psp_modules.0.1.bn.weight", "bottleneck.conv.weight"} <= keys(
        "PSPHead"
    )
    assert {
        "image_pool.1.conv.weight",
        "aspp_modules.0.conv.weight",
        "aspp_modules.2.conv.weight",
        "bottleneck.bn.bias",
    } <= keys("ASPPHead")
    assert {
        "aspp_modules.0.conv.weight",  # dilation 1 stays a plain 1x1 ConvModule
        "aspp_modules.1.depthwise_conv.conv.weight",
        "aspp_modules.1.pointwise_conv.bn.weight",
        "c1_bottleneck.conv.weight",
        "sep_bottleneck.0.depthwise_conv.conv.weight",
        "sep_bottleneck.1.pointwise_conv.bn.running_var",
    } <= keys("DepthwiseSeparableASPPHead")
    assert {
        "psp_modules.1.1.conv.weight",
        "bottleneck.conv.weight",
        "lateral_convs.2.conv.weight",
        "fpn_convs.0.bn.weight",
        "fpn_bottleneck.conv.weight",
    } <= keys("UPerHead")
    assert "lateral_convs.3.conv.weight" not in keys("UPerHead")  # the top stage goes through the PPM
    sep = MODELS.build({**HEADS["DepthwiseSeparableASPPHead"], "num_classes": 3, "norm_cfg": BN})
    assert sep.aspp_modules[1].depthwise_conv.conv.groups == 24
    assert sep.aspp_modules[2].depthwise_conv.conv.dilation == (3, 3)


def test_fcn_head_by_hand():
    head = FCNHead(
        num_convs=1, kernel_size=3, in_channels=16, channels=8, num_classes=3, in_index=2, dropout_ratio=0.0
    ).eval()
    x = feats()[2]
    conv, cat = head.convs[0].conv, head.conv_cat.conv
    y = F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1))
    y = F.relu(F.conv2d(torch.cat([x, y], 1), cat.weight, cat.bias, padding=1))
    expected = F.conv2d(y, head.conv_seg.weight, head.conv_seg.bias)
    torch.testing.assert_close(head(feats()), expected)
    plain = FCNHead(
        num_convs=0,
        concat_input=False,
        in_channels=16,
        channels=16,
        num_classes=3,
        in_index=2,
        dropout_ratio=0.0,
    )
    torch.testing.assert_close(plain(feats()), plain.conv_seg(x))
    with pytest.raises(ValueError, match="must equal channels"):
        FCNHead(num_convs=0, in_channels=16, channels=8, num_classes=3)


def test_pyramid_pooling_scale_one_is_the_global_mean():
    head = PSPHead(pool_scales=[1], in_channels=24, channels=4, num_classes=3, in_index=3).eval()
    x = feats()[3]
    conv = head.psp_modules[0][1].conv
    pooled = F.relu(F.conv2d(x.mean((2, 3), keepdim=True), conv.weight, conv.bias))
    (branch,) = head.psp_modules(x)
    torch.testing.assert_close(branch, pooled.expand(-1, -1, *x.shape[2:]))


def test_aspp_branches_by_hand():
    head = ASPPHead(dilations=[1, 2], in_channels=24, channels=4, num_classes=3, in_index=3).eval()
    x = feats()[3]
    one, two = head.aspp_modules
    assert one.conv.kernel_size == (1, 1) and two.conv.kernel_size == (3, 3)
    out = head.aspp_modules(x)
    torch.testing.assert_close(
        out[1], F.relu(F.conv2d(x, two.conv.weight, two.conv.bias, padding=2, dilation=2))
    )
    assert head._forward_feature(feats()).shape == (2, 4, *SIZES[3])


def test_deeplabv3plus_fuses_low_level_features_at_their_size():
    head = DepthwiseSeparableASPPHead(
        c1_in_channels=8,
        c1_channels=4,
        dilations=[1, 2],
        in_channels=24,
        channels=8,
        num_classes=3,
        in_index=3,
        norm_cfg=BN,
    )
    assert head(feats()).shape == (2, 3, *SIZES[0])
    no_c1 = DepthwiseSeparableASPPHead(
        c1_in_channels=0,
        c1_channels=0,
        dilations=[1, 2],
        in_channels=24,
        channels=8,
        num_classes=3,
        in_index=3,
    )
    assert no_c1.c1_bottleneck is None and no_c1(feats()).shape == (2, 3, *SIZES[3])


def test_uper_head_top_down_by_hand_with_two_stages():
    head = UPerHead(
        pool_scales=[1], in_channels=[8, 12], in_index=[0, 1], channels=4, num_classes=3, dropout_ratio=0.0
    ).eval()
    x0, x1 = feats()[:2]
    top = head.psp_forward([x0, x1])
    lateral = head.lateral_convs[0](x0) + F.interpolate(top, size=x0.shape[2:], mode="bilinear")
    fused = head.fpn_bottleneck(
        torch.cat([head.fpn_convs[0](lateral), F.interpolate(top, size=x0.shape[2:], mode="bilinear")], 1)
    )
    torch.testing.assert_close(head([x0, x1]), head.conv_seg(fused))


@pytest.mark.parametrize(
    "norm_cfg",
    [
        None,
        {"type": "BN", "requires_grad": True},
        {"type": "GN", "num_groups": 2, "requires_grad": True},
        {"type": "SyncBN", "requires_grad": True},
    ],
)
def test_norm_options(norm_cfg):
    head = MODELS.build({**HEADS["UPerHead"], "num_classes": 3, "norm_cfg": norm_cfg})
    expected = {
        None: None,
        "BN": torch.nn.BatchNorm2d,
        "GN": torch.nn.GroupNorm,
        "SyncBN": torch.nn.SyncBatchNorm,
    }
    norm = head.fpn_bottleneck.norm
    kind = None if norm_cfg is None else norm_cfg["type"]
    assert (norm is None) if kind is None else isinstance(norm, expected[kind])
    assert head.fpn_bottleneck.conv.bias is None if norm_cfg else head.fpn_bottleneck.conv.bias is not None
    assert head.eval()(feats()).shape == (2, 3, *SIZES[0])


def test_input_transform_align_corners_dropout_and_binary_output():
    concat = FCNHead(
        in_channels=[8, 12, 16],
        in_index=[0, 1, 2],
        input_transform="resize_concat",
        channels=8,
        num_classes=4,
        num_convs=1,
        align_corners=True,
        dropout_ratio=0.0,
    )
    assert concat.in_channels == 36 and concat.dropout is None and concat.align_corners
    assert concat(feats()).shape == (2, 4, *SIZES[0])
    binary = PSPHead(in_channels=24, in_index=-1, channels=4, num_classes=2, out_channels=1, threshold=0.4)
    assert binary.out_channels == 1 and binary.threshold == 0.4 and binary.conv_seg.out_channels == 1
    with pytest.raises(ValueError, match="out_channels"):
        PSPHead(in_channels=24, channels=4, num_classes=3, out_channels=2)
    with pytest.raises(ValueError, match="input_transform"):
        ASPPHead(in_channels=24, channels=4, num_classes=3, input_transform="concat")


def test_fpn_outputs_and_top_down_by_hand():
    neck = FPN(in_channels=CHANNELS, out_channels=6, num_outs=5).eval()
    outs = neck(feats())
    assert [tuple(o.shape) for o in outs] == [(2, 6, *hw) for hw in SIZES] + [(2, 6, 2, 2)]
    torch.testing.assert_close(outs[4], outs[3][:, :, ::2, ::2])  # extra level: stride-2 max pool of size 1
    assert {"lateral_convs.0.conv.weight", "fpn_convs.3.conv.bias"} <= set(neck.state_dict())
    two = FPN(in_channels=[8, 12], out_channels=6, num_outs=2).eval()
    x0, x1 = feats()[:2]
    lateral = two.lateral_convs[0](x0) + F.interpolate(
        two.lateral_convs[1](x1), size=x0.shape[2:], mode="nearest"
    )
    torch.testing.assert_close(two([x0, x1])[0], two.fpn_convs[0](lateral))
    extra = FPN(in_channels=CHANNELS, out_channels=6, num_outs=6, add_extra_convs="on_output", norm_cfg=BN)
    shapes = [tuple(o.shape[2:]) for o in extra(feats())]
    assert shapes[4:] == [(2, 2), (1, 1)] and len(extra.fpn_convs) == 6
    with pytest.raises(ValueError, match="num_outs"):
        FPN(in_channels=CHANNELS, out_channels=6, num_outs=3)
