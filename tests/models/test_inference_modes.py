"""Whole and slide inference (models/inference_modes.py): slide equals whole for one crop, overlapping
windows averaged, slide inference in crop batches; auxiliary heads with their own losses, and binary
segmentation (`out_channels=1`) end to end: loss, predict, metric."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from segmentor_testing import tiny_model

from segaccel.evaluation.iou_metric import IoUMetric
from segaccel.models import Segmentor
from segaccel.structures import PixelData, SegDataSample

BN = {"type": "BN", "requires_grad": True}
MIT = dict(
    type="MixVisionTransformer",
    embed_dims=8,
    num_layers=[1, 1, 1, 1],
    num_heads=[1, 1, 1, 1],
    sr_ratios=[4, 2, 1, 1],
    drop_path_rate=0.0,
)


def model(**overrides) -> Segmentor:
    torch.manual_seed(0)
    cfg = dict(
        backbone=MIT,
        decode_head=dict(
            type="SegformerHead", in_channels=[8, 8, 8, 8], channels=8, num_classes=3, norm_cfg=BN
        ),
        data_preprocessor=dict(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]),
    )
    cfg.update(overrides)
    return Segmentor(**cfg)


def labelled(labels: torch.Tensor) -> list[SegDataSample]:
    return [
        SegDataSample(gt_sem_seg=PixelData(label[None]), metainfo={"img_shape": tuple(label.shape)})
        for label in labels
    ]


def test_slide_windows_give_the_same_logits_whatever_the_crop_batch():
    net = model().eval()
    net.test_cfg = {"mode": "slide", "crop_size": (24, 32), "stride": (16, 20)}
    x = torch.randn(2, 3, 45, 71)
    metas = [{"img_shape": (45, 71)}] * 2
    with torch.no_grad():
        one = net.slide_inference(x, metas, crops_per_batch=1)
        many = net.slide_inference(x, metas, crops_per_batch=16)
        # by hand: the first window alone covers the top-left corner, so there it is just that crop
        first = net.encode_decode(x[:, :, :24, :32], [{"img_shape": (24, 32), "pad_shape": (24, 32)}] * 2)
    assert one.shape == (2, 3, 45, 71)
    torch.testing.assert_close(many, one, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one[:, :, :16, :20], first[:, :, :16, :20], atol=1e-5, rtol=1e-5)


def test_auxiliary_heads_are_logged_under_aux_with_their_own_losses():
    aux = dict(
        type="FCNHead",
        in_channels=8,
        in_index=2,
        channels=4,
        num_convs=1,
        concat_input=False,
        num_classes=3,
        norm_cfg=BN,
        loss_decode=[
            {"type": "CrossEntropyLoss", "loss_weight": 0.4},
            {"type": "DiceLoss", "loss_weight": 0.4},
        ],
    )
    labels = torch.randint(0, 3, (2, 32, 40))
    net = model(auxiliary_head=aux).train()
    losses = net.loss(torch.randn(2, 3, 32, 40), labelled(labels))
    assert set(losses) == {"decode.loss_ce", "decode.acc_seg", "aux.loss_ce", "aux.loss_dice", "aux.acc_seg"}
    sum(v for k, v in losses.items() if "loss" in k).backward()
    assert net.auxiliary_head.convs[0].conv.weight.grad is not None
    psp = dict(
        type="PSPHead", in_channels=8, in_index=3, channels=4, pool_scales=[1, 2], num_classes=3, norm_cfg=BN
    )
    several = model(auxiliary_head=[aux, psp]).train()
    keys = set(several.loss(torch.randn(2, 3, 32, 40), labelled(labels)))
    assert {"aux_0.loss_ce", "aux_0.loss_dice", "aux_1.loss_ce", "aux_1.acc_seg"} <= keys
    assert several.eval().predict(torch.randn(1, 3, 32, 40))[0].seg_logits.data.shape == (3, 32, 40)


def test_binary_segmentation_end_to_end():
    """One sigmoid channel: BCE loss, training, thresholded prediction, IoU over 2 classes."""
    head = dict(
        type="SegformerHead",
        in_channels=[8, 8, 8, 8],
        channels=8,
        num_classes=2,
        out_channels=1,
        threshold=0.5,
        norm_cfg=BN,
        loss_decode=[
            {"type": "CrossEntropyLoss", "use_sigmoid": True},
            {"type": "DiceLoss", "loss_weight": 0.5},
        ],
    )
    net = model(decode_head=head)
    assert net.out_channels == 1 and net.num_classes == 2
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(4, 32, 32, dtype=torch.long)
    for i, (top, left) in enumerate([(0, 0), (8, 16), (16, 4), (4, 12)]):
        labels[i, top : top + 16, left : left + 16] = 1  # a bright square on a dark background
    x = labels[:, None].float().expand(-1, 3, -1, -1) - 0.5 + 0.1 * torch.randn(4, 3, 32, 32, generator=g)
    labels[0, :4] = 255
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    net.train()
    first = None
    for _ in range(40):
        losses = net.loss(x, labelled(labels))
        total = losses["decode.loss_ce"] + losses["decode.loss_dice"]
        first = first if first is not None else total.item()
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert total.item() < first
    net.eval()
    with torch.no_grad():
        preds = net.predict(x, labelled(labels))
    assert preds[0].seg_logits.data.shape == (1, 32, 32)
    assert 0 <= preds[0].seg_logits.data.min() and preds[0].seg_logits.data.max() <= 1  # probabilities
    torch.testing.assert_close(preds[0].pred_sem_seg.data, (preds[0].seg_logits.data > 0.5).long())
    metric = IoUMetric(num_classes=2)
    metric.process(preds)
    result = metric.compute()
    assert result["mIoU"] > 60.0
    # slide inference takes the one channel through as well
    net.test_cfg = {"mode": "slide", "crop_size": (16, 16), "stride": (12, 12)}
    with torch.no_grad():
        slid = net.predict(x[:1])
    assert slid[0].pred_sem_seg.data.shape == (1, 32, 32)
    assert set(slid[0].pred_sem_seg.data.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("head_type", ["FCNHead", "UPerHead"])
def test_binary_heads_other_than_segformer(head_type):
    extra = (
        {"in_channels": 8, "in_index": 3}
        if head_type == "FCNHead"
        else {"in_channels": [8, 8, 8, 8], "in_index": [0, 1, 2, 3], "pool_scales": [1, 2]}
    )
    head = dict(
        type=head_type,
        channels=4,
        num_classes=2,
        out_channels=1,
        threshold=0.3,
        norm_cfg=BN,
        loss_decode={"type": "FocalLoss"},
        **extra,
    )
    net = model(decode_head=head).train()
    labels = torch.randint(0, 2, (2, 32, 32))
    losses = net.loss(torch.randn(2, 3, 32, 32), labelled(labels))
    assert set(losses) == {"decode.loss_focal", "decode.acc_seg"}
    out = net.eval().predict(torch.randn(1, 3, 32, 32))[0]
    torch.testing.assert_close(out.pred_sem_seg.data, (out.seg_logits.data > 0.3).long())


def test_slide_windows_match_mmsegmentations_grid():
    from segaccel.models.inference_modes import slide_windows

    # 512x1024 with 512 crops every 341: three windows, the last shifted back to end at the border
    assert slide_windows((512, 1024), (512, 512), (341, 341)) == [
        (0, 512, 0, 512),
        (0, 512, 341, 853),
        (0, 512, 512, 1024),
    ]
    # an image lower than the crop: one row of windows as high as the image
    assert slide_windows((20, 80), (32, 32), (24, 24)) == [(0, 20, 0, 32), (0, 20, 24, 56), (0, 20, 48, 80)]
    # row by row, and a grid that fits exactly
    assert slide_windows((4, 4), (2, 2), (2, 2)) == [(0, 2, 0, 2), (0, 2, 2, 4), (2, 4, 0, 2), (2, 4, 2, 4)]


# --- whole and slide inference ----------------------------------------------------------------------
def test_slide_equals_whole_when_one_crop_covers_the_image():
    whole = tiny_model()
    slide = tiny_model(test_cfg={"mode": "slide", "crop_size": (16, 16), "stride": (8, 8)})
    slide.load_state_dict(whole.state_dict())
    x = torch.randn(2, 3, 16, 16)  # exactly one crop
    metas = [{"ori_shape": (16, 16), "img_shape": (16, 16)}] * 2
    with torch.no_grad():
        assert torch.equal(slide.inference(x, metas), whole.inference(x, metas))
        # an image smaller than the crop: its one window is padded (pad_val 0) up to the crop
        small = x[:, :, :12, :]
        padded = F.pad(small, (0, 0, 0, 4), value=0.0)
        expected = whole.inference(padded, metas)[:, :, :12, :]
        assert torch.equal(slide.inference(small, metas), expected)


def test_slide_averages_overlapping_windows():
    model = tiny_model(test_cfg={"mode": "slide", "crop_size": [8, 8], "stride": [4, 4]})
    x = torch.randn(1, 3, 8, 12)
    meta = {"ori_shape": (8, 12), "img_shape": (8, 12)}
    with torch.no_grad():
        out = model.inference(x, [meta])
        left = model.encode_decode(x[:, :, :, 0:8], [{"pad_shape": (8, 8)}])  # windows x in [0, 8), [4, 12)
        right = model.encode_decode(x[:, :, :, 4:12], [{"pad_shape": (8, 8)}])
    assert out.shape == (1, 3, 8, 12)
    assert torch.allclose(out[..., 0:4], left[..., 0:4])
    assert torch.allclose(out[..., 4:8], (left[..., 4:8] + right[..., 0:4]) / 2)
    assert torch.allclose(out[..., 8:12], right[..., 4:8])
