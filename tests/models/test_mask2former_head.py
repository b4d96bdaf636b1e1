"""`Mask2FormerHead` as a decode head: predictions per layer, losses with deep supervision, semantic
logits, and the whole `Segmentor` (loss / predict whole and slide / tensor, config.json round trip)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segaccel.models import Segmentor
from segaccel.models.heads.mask2former.ms_deform_attn import multi_scale_deformable_attention
from segaccel.models.heads.mask_classification import semantic_logits
from segaccel.registry import MODELS
from segaccel.structures import PixelData, SegDataSample

NUM_CLASSES = 5
CHANNELS = [16, 24, 32, 40]


def tiny_head(**overrides) -> dict:
    """A narrow Mask2FormerHead config: 16 channels, 2 encoder and 3 decoder layers, 6 queries."""
    attn = {"embed_dims": 16, "num_heads": 2}
    cfg = {
        "type": "Mask2FormerHead",
        "in_channels": CHANNELS,
        "feat_channels": 16,
        "out_channels": 16,
        "num_classes": NUM_CLASSES,
        "num_queries": 6,
        "pixel_decoder": {
            "norm_cfg": {"type": "GN", "num_groups": 4},
            "encoder": {
                "num_layers": 2,
                "layer_cfg": {
                    "self_attn_cfg": {"embed_dims": 16, "num_heads": 2, "num_levels": 3, "num_points": 2},
                    "ffn_cfg": {"embed_dims": 16, "feedforward_channels": 32},
                },
            },
            "positional_encoding": {"num_feats": 8, "normalize": True},
        },
        "positional_encoding": {"num_feats": 8, "normalize": True},
        "transformer_decoder": {
            "num_layers": 3,
            "layer_cfg": {
                "self_attn_cfg": attn,
                "cross_attn_cfg": attn,
                "ffn_cfg": {"embed_dims": 16, "feedforward_channels": 32},
            },
        },
        "loss_decode": {"type": "MaskClassificationLoss", "num_points": 256,
                        "matcher": {"type": "HungarianMatcher", "num_points": 256}},
    }
    cfg.update(overrides)
    return cfg


def feats(n: int = 2, h: int = 64, w: int = 96, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, h // s, w // s, generator=g) for c, s in zip(CHANNELS, (4, 8, 16, 32))]


def samples(n: int = 2, h: int = 64, w: int = 96, seed: int = 0) -> list[SegDataSample]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        label = torch.randint(0, NUM_CLASSES, (1, h, w), generator=g)
        label[:, :8] = 255  # an ignored band
        meta = {"img_shape": (h, w), "ori_shape": (h, w)}
        out.append(SegDataSample(gt_sem_seg=PixelData(label), metainfo=meta))
    return out


def test_forward_gives_every_layer_classes_and_masks_at_a_quarter():
    head = MODELS.build(tiny_head())
    all_cls, all_masks = head(feats())
    assert len(all_cls) == len(all_masks) == 4  # before the decoder + after each of 3 layers
    for cls, masks in zip(all_cls, all_masks):
        assert cls.shape == (2, 6, NUM_CLASSES + 1)
        assert masks.shape == (2, 6, 16, 24)
    assert head.out_channels == NUM_CLASSES and head.mask_channels == 16


def test_losses_of_every_layer_and_gradients_everywhere():
    head = MODELS.build(tiny_head())
    losses = head.loss(feats(), samples())
    names = {f"{p}{k}" for p in ("", "d0.", "d1.", "d2.") for k in ("loss_cls", "loss_mask", "loss_dice")}
    assert set(losses) == names
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    # every parameter takes part (DDP fails on an unused one); the level encodings' gradient is 0 at
    # init (they only reach the zero-initialised offset and weight projections), as in mmdet
    assert [n for n, p in head.named_parameters() if p.grad is None] == []
    zero = [n for n, p in head.named_parameters() if not p.grad.abs().sum() > 0]
    assert zero == ["pixel_decoder.level_encoding.weight"]


def test_class_targets_one_mask_per_present_class_without_ignore():
    head = MODELS.build(tiny_head())
    label = torch.full((1, 4, 6), 255)
    label[0, :2, :3] = 3
    label[0, 2:, 3:] = 1
    labels, masks = head.class_targets([SegDataSample(gt_sem_seg=PixelData(label))])
    assert labels[0].tolist() == [1, 3]
    assert masks[0].shape == (2, 4, 6)
    assert torch.equal(masks[0][0], label[0] == 1) and torch.equal(masks[0][1], label[0] == 3)
    assert not masks[0].any(0)[label[0] == 255].any()  # ignored pixels are in no mask


def test_labels_outside_the_classes_are_an_error_naming_the_sample():
    head = MODELS.build(tiny_head())
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    label[0, 0, 0] = 7
    good = SegDataSample(gt_sem_seg=PixelData(torch.zeros(1, 4, 4, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"data_samples\[1\].*label\(s\) \[7\]"):
        head.class_targets([good, SegDataSample(gt_sem_seg=PixelData(label))])


def test_predict_is_softmax_classes_times_sigmoid_masks_at_the_padded_size():
    head = MODELS.build(tiny_head()).eval()
    with torch.no_grad():
        all_cls, all_masks = head(feats())
        logits = head.predict(feats(), [{"img_shape": (60, 90), "pad_shape": (64, 96)}] * 2)
    masks = F.interpolate(all_masks[-1], size=(64, 96), mode="bilinear", align_corners=False)
    expected = torch.einsum("bqc,bqhw->bchw", all_cls[-1].softmax(-1)[..., :5], masks.sigmoid())
    torch.testing.assert_close(logits, expected)
    assert logits.shape == (2, NUM_CLASSES, 64, 96)
    assert logits.min() >= 0 and logits.sum(1).max() <= 6  # at most one per query


def test_semantic_logits_by_hand():
    cls = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])  # 2 queries, 2 classes + no object
    masks = torch.tensor([[[[10.0]], [[10.0]]]])
    p0 = torch.tensor([2.0, 0.0, 0.0]).softmax(-1)[:2]
    p1 = torch.tensor([0.0, 0.0, 5.0]).softmax(-1)[:2]
    expected = (p0 + p1) * torch.sigmoid(torch.tensor(10.0))
    torch.testing.assert_close(semantic_logits(cls, masks)[0, :, 0, 0], expected)


def test_deformable_attention_against_a_direct_bilinear_sum():
    """One query, one head, two levels, two points: the weighted sum of hand-interpolated values."""
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 5), (2, 4)]
    maps = [torch.randn(h, w, 2, generator=g) for h, w in shapes]  # (h, w, C)
    value = torch.cat([m.reshape(-1, 2) for m in maps])[None, :, None, :]  # (1, S, 1, C)
    locations = torch.rand(1, 1, 1, 2, 2, 2, generator=g)  # (x, y) in [0, 1]
    weights = torch.rand(1, 1, 1, 2, 2, generator=g)
    out = multi_scale_deformable_attention(value, shapes, locations, weights)

    def bilinear(m, x, y):  # align_corners=False, zero outside
        h, w, _ = m.shape
        px, py = x * w - 0.5, y * h - 0.5
        x0, y0 = int(torch.floor(px)), int(torch.floor(py))
        total = torch.zeros(2)
        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
            if 0 <= yy < h and 0 <= xx < w:
                total += m[yy, xx] * (1 - abs(px - xx)) * (1 - abs(py - yy))
        return total

    expected = sum(
        weights[0, 0, 0, lvl, p] * bilinear(maps[lvl], *locations[0, 0, 0, lvl, p])
        for lvl in range(2)
        for p in range(2)
    )
    torch.testing.assert_close(out[0, 0], expected, atol=1e-5, rtol=1e-5)


# --- in a Segmentor --------------------------------------------------------------------------------
def tiny_segmentor(**overrides) -> Segmentor:
    cfg = dict(
        backbone={
            "type": "TimmBackbone",
            "model_name": "resnet18",
            "out_indices": [1, 2, 3, 4],
            "model_kwargs": {"layers": [1, 1, 1, 1], "channels": CHANNELS},
        },
        decode_head=tiny_head(),
        data_preprocessor={
            "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "size_divisor": 32
        },
    )
    cfg.update(overrides)
    return Segmentor(**cfg)


def batch(n: int = 2, h: int = 60, w: int = 90) -> dict:
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for _ in range(n)]
    data = samples(n, h, w)
    for s in data:
        s.set_metainfo({"img_shape": (h, w), "ori_shape": (h, w)})
    return {"inputs": images, "data_samples": data}


def test_segmentor_loss_predict_and_tensor_modes():
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = tiny_segmentor()
    data = model.data_preprocessor(batch(), training=True)
    losses = model(data["inputs"], data["data_samples"], mode="loss")
    assert {"decode.loss_cls", "decode.loss_mask", "decode.loss_dice", "decode.d0.loss_cls"} <= set(losses)
    model.eval()
    data = model.data_preprocessor(batch(), training=False)
    with torch.no_grad():
        preds = model(data["inputs"], data["data_samples"], mode="predict")
    assert preds[0].seg_logits.data.shape == (NUM_CLASSES, 60, 90)
    assert preds[0].pred_sem_seg.data.shape == (1, 60, 90)
    model.test_cfg = {"mode": "slide", "crop_size": [32, 32], "stride": [24, 24]}
    with torch.no_grad():
        slide = model(data["inputs"], data["data_samples"], mode="predict")
    assert slide[0].seg_logits.data.shape == (NUM_CLASSES, 60, 90)


def test_config_json_round_trip(tmp_path):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = tiny_segmentor().eval()
    model.save_pretrained(tmp_path)
    loaded = Segmentor.from_pretrained(tmp_path)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a = model.predict(x)[0].seg_logits.data
        b = loaded.predict(x)[0].seg_logits.data
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert loaded.config["decode_head"]["loss_decode"]["num_points"] == 256
