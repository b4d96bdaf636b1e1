"""SegformerHead (both flavours) and BaseDecodeHead: shapes, names, losses and accuracy by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segaccel.models.heads.decode_head import BaseDecodeHead
from segaccel.models.heads.segformer_head import SegformerHead
from segaccel.models.losses.cross_entropy_loss import CrossEntropyLoss
from segaccel.registry import MODELS, ConfigError
from segaccel.structures import PixelData, SegDataSample

if "CrossEntropyLoss" not in MODELS:
    MODELS.register(CrossEntropyLoss)

IN_CHANNELS = [8, 16, 24, 32]


def stage_features(n: int = 2, h: int = 67, w: int = 93) -> list[torch.Tensor]:
    """Random maps shaped like MiT outputs for an (h, w) image (strides 4, 8, 16, 32, rounded up)."""
    feats, size = [], (h, w)
    for i, c in enumerate(IN_CHANNELS):
        stride = 4 if i == 0 else 2
        size = tuple(-(-s // stride) for s in size)
        feats.append(torch.randn(n, c, *size))
    return feats


def samples(labels: torch.Tensor) -> list[SegDataSample]:
    return [SegDataSample(gt_sem_seg=PixelData(label)) for label in labels]


@pytest.mark.parametrize("projection", ["conv", "linear"])
def test_output_is_quarter_resolution(projection):
    torch.manual_seed(0)
    head = SegformerHead(IN_CHANNELS, 16, num_classes=5, projection=projection)
    feats = stage_features()
    assert [tuple(f.shape[2:]) for f in feats] == [(17, 24), (9, 12), (5, 6), (3, 3)]
    assert head(feats).shape == (2, 5, 17, 24)
    assert head.in_index == [0, 1, 2, 3] and head.input_transform == "multiple_select"


def test_conv_flavour_names_and_computation():
    torch.manual_seed(0)
    head = SegformerHead(IN_CHANNELS, 16, num_classes=5).eval()
    keys = set(head.state_dict())
    assert {
        "convs.0.conv.weight",
        "convs.0.bn.weight",
        "convs.3.bn.running_var",
        "fusion_conv.conv.weight",
        "fusion_conv.bn.bias",
        "conv_seg.weight",
        "conv_seg.bias",
    } <= keys
    assert "convs.0.conv.bias" not in keys  # bias="auto": no bias before a norm
    assert isinstance(head.dropout, nn.Dropout2d)
    feats = stage_features()
    with torch.no_grad():
        projected = [
            F.interpolate(F.relu(conv.bn(conv.conv(x))), size=(17, 24), mode="bilinear", align_corners=False)
            for x, conv in zip(feats, head.convs)
        ]
        fused = F.relu(head.fusion_conv.bn(head.fusion_conv.conv(torch.cat(projected, dim=1))))  # stage order
        torch.testing.assert_close(head(feats), head.conv_seg(fused))


def test_linear_flavour_mirrors_transformers():
    torch.manual_seed(0)
    head = SegformerHead(IN_CHANNELS, 16, num_classes=5, projection="linear").eval()
    keys = set(head.state_dict())
    assert {
        "linear_c.0.proj.weight",
        "linear_c.3.proj.bias",
        "linear_fuse.weight",
        "batch_norm.weight",
        "batch_norm.running_mean",
        "conv_seg.weight",
        "conv_seg.bias",
    } <= keys
    assert "linear_fuse.bias" not in keys
    assert type(head.dropout) is nn.Dropout
    with torch.no_grad():  # non-trivial BN statistics
        head.batch_norm.running_mean.uniform_(-1, 1)
        head.batch_norm.running_var.uniform_(0.5, 2)
    feats = stage_features()
    # transformers' SegformerDecodeHead.forward, written out
    all_hidden = ()
    for state, mlp in zip(feats, head.linear_c):
        n, _, h, w = state.shape
        state = mlp.proj(state.flatten(2).transpose(1, 2)).permute(0, 2, 1).reshape(n, -1, h, w)
        state = F.interpolate(state, size=feats[0].shape[2:], mode="bilinear", align_corners=False)
        all_hidden += (state,)
    hidden = head.linear_fuse(torch.cat(all_hidden[::-1], dim=1))
    logits = head.conv_seg(head.dropout(torch.relu(head.batch_norm(hidden))))
    with torch.no_grad():
        torch.testing.assert_close(head(feats), logits)
        # the order matters: the same weights in stage order give another result
        wrong = head.linear_fuse(torch.cat(all_hidden, dim=1))
        assert not torch.allclose(hidden, wrong)


def hand_case():
    """Logits 2 on the predicted class, 0 elsewhere; 5 valid pixels, 3 predicted right."""
    label = torch.tensor([[[0, 1, 2], [255, 1, 0]]])  # (1, 2, 3)
    pred = torch.tensor([[[0, 2, 2], [1, 1, 1]]])
    logits = F.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 2.0  # (1, 3, 2, 3)
    right, wrong = math.log(1 + 2 * math.exp(-2)), math.log(math.exp(2) + 2)  # CE of [2, 0, 0]
    return logits, label.unsqueeze(1), 3 * right + 2 * wrong


def test_loss_by_feat_with_ignored_pixels_by_hand():
    head = SegformerHead(IN_CHANNELS, 16, num_classes=3)
    logits, label, total = hand_case()
    losses = head.loss_by_feat(logits, samples(label))
    assert set(losses) == {"loss_ce", "acc_seg"}
    assert losses["loss_ce"].item() == pytest.approx(
        total / 6, rel=1e-5
    )  # all 6 pixels (avg_non_ignore=False)
    assert losses["acc_seg"].item() == pytest.approx(60.0, rel=1e-5)  # 3 of the 5 labelled pixels

    head = SegformerHead(
        IN_CHANNELS, 16, num_classes=3, loss_decode={"type": "CrossEntropyLoss", "avg_non_ignore": True}
    )
    assert head.loss_by_feat(logits, samples(label))["loss_ce"].item() == pytest.approx(total / 5, rel=1e-5)


def test_loss_by_feat_resizes_logits_to_labels():
    torch.manual_seed(0)
    head = SegformerHead(IN_CHANNELS, 16, num_classes=4, align_corners=False)
    logits = torch.randn(2, 4, 5, 7)
    label = torch.randint(0, 4, (2, 1, 19, 27))
    label[:, :, :3] = 255
    losses = head.loss_by_feat(logits, samples(label))
    up = F.interpolate(logits, size=(19, 27), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(up, label[:, 0], ignore_index=255, reduction="sum") / label.numel()
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-5)
    valid = label[:, 0] != 255
    acc = (up.argmax(1) == label[:, 0])[valid].float().mean() * 100
    assert losses["acc_seg"].item() == pytest.approx(acc.item(), rel=1e-5)


def test_losses_with_one_name_are_summed():
    logits, label, total = hand_case()
    head = SegformerHead(
        IN_CHANNELS,
        16,
        num_classes=3,
        loss_decode=[
            {"type": "CrossEntropyLoss", "loss_weight": 1.0},
            {"type": "CrossEntropyLoss", "loss_weight": 0.5},
            {"type": "CrossEntropyLoss", "loss_weight": 2.0, "loss_name": "loss_other"},
        ],
    )
    losses = head.loss_by_feat(logits, samples(label))
    assert losses["loss_ce"].item() == pytest.approx(1.5 * total / 6, rel=1e-5)
    assert losses["loss_other"].item() == pytest.approx(2.0 * total / 6, rel=1e-5)


@pytest.mark.parametrize("projection", ["conv", "linear"])
def test_loss_backpropagates_into_the_head(projection):
    torch.manual_seed(0)
    head = SegformerHead(IN_CHANNELS, 16, num_classes=3, projection=projection)
    feats = stage_features(h=32, w=48)
    label = torch.randint(0, 3, (2, 1, 32, 48))
    losses = head.loss(feats, samples(label))
    losses["loss_ce"].backward()
    assert not losses["acc_seg"].requires_grad
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_predict_resizes_to_pad_shape_or_img_shape():
    head = SegformerHead(IN_CHANNELS, 16, num_classes=5).eval()
    feats = stage_features(n=1, h=60, w=90)
    assert head.predict(feats, [{"img_shape": (60, 90), "pad_shape": (64, 96)}]).shape == (1, 5, 64, 96)
    assert head.predict(feats, [{"img_shape": (60, 90)}]).shape == (1, 5, 60, 90)


def test_binary_head_with_threshold():
    with pytest.warns(UserWarning, match="0.3"):
        head = SegformerHead(
            IN_CHANNELS,
            16,
            num_classes=2,
            out_channels=1,
            loss_decode={"type": "CrossEntropyLoss", "use_sigmoid": True},
        )
    assert head.threshold == 0.3 and head.conv_seg.out_channels == 1
    logits = torch.tensor([[[[0.0, -2.0, 2.0, -0.5]]]])  # sigmoid 0.5, 0.12, 0.88, 0.38
    label = torch.tensor([[[[1, 1, 255, 0]]]])
    losses = head.loss_by_feat(logits, samples(label))
    # predictions 1, 0, (ignored), 1 → 1 of 3 right
    assert losses["acc_seg"].item() == pytest.approx(100 / 3, rel=1e-5)
    bce = math.log(2) + math.log(1 + math.exp(2)) + math.log(1 + math.exp(-0.5))
    assert losses["loss_ce"].item() == pytest.approx(bce / 4, rel=1e-5)
    with pytest.raises(ValueError, match="out_channels"):
        SegformerHead(IN_CHANNELS, 16, num_classes=3, out_channels=2)


class ConcatHead(BaseDecodeHead):
    """The smallest head: the base class's input transform, then the classifier."""

    def forward(self, inputs):
        return self.cls_seg(self._transform_inputs(inputs))


def test_input_transforms():
    feats = stage_features(n=1, h=32, w=32)
    head = ConcatHead([8, 24], 32, num_classes=3, in_index=[0, 2], input_transform="resize_concat")
    assert head.in_channels == 32
    assert head._transform_inputs(feats).shape == (1, 32, 8, 8)
    assert head(feats).shape == (1, 3, 8, 8)
    single = ConcatHead(32, 32, num_classes=3)  # in_index=-1: the last stage
    assert single._transform_inputs(feats) is feats[-1]
    selected = ConcatHead([16, 32], 8, num_classes=3, in_index=[1, 3], input_transform="multiple_select")
    assert [f.shape[1] for f in selected._transform_inputs(feats)] == [16, 32]
    with pytest.raises(ValueError, match="single ints"):
        ConcatHead([8, 16], 8, num_classes=3)
    with pytest.raises(ValueError, match="input_transform"):
        ConcatHead(8, 8, num_classes=3, input_transform="concat")


def test_clear_errors():
    head = SegformerHead(IN_CHANNELS, 16, num_classes=3)
    logits = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"data_samples\[1\] has no gt_sem_seg"):
        head.loss_by_feat(
            logits, [SegDataSample(gt_sem_seg=PixelData(torch.zeros(1, 4, 4).long())), SegDataSample()]
        )
    with pytest.raises(ValueError, match="differ in size"):
        head.loss_by_feat(
            logits,
            [
                SegDataSample(gt_sem_seg=PixelData(torch.zeros(1, 4, 4).long())),
                SegDataSample(gt_sem_seg=PixelData(torch.zeros(1, 4, 5).long())),
            ],
        )
    with pytest.raises(ConfigError, match="OHEMPixelSamplr"):
        SegformerHead(IN_CHANNELS, 16, num_classes=3, sampler={"type": "OHEMPixelSamplr"})
    with pytest.raises(ValueError, match="projection"):
        SegformerHead(IN_CHANNELS, 16, num_classes=3, projection="mlp")
