"""Segmentor: construction, the loss / predict / tensor modes, and a real tiny SegFormer end to end.

Most tests use a one-conv backbone and a minimal head (`segmentor_testing`) so the numbers can be
followed by hand; the last one uses the real tiny MiT + SegformerHead. Whole/slide inference is in
test_inference_modes.py, save_pretrained/from_pretrained in test_pretrained.py.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from segmentor_testing import random_images, sample_with, tiny_cfg, tiny_model

from segaccel.models import Segmentor
from segaccel.registry import MODELS, ConfigError
from segaccel.structures import PixelData


# --- construction -----------------------------------------------------------------------------------
def test_registered_as_segmentor_and_encoder_decoder():
    assert MODELS.get("Segmentor") is Segmentor and MODELS.get("EncoderDecoder") is Segmentor
    torch.manual_seed(0)
    model = MODELS.build(dict(type="EncoderDecoder", **tiny_cfg()))
    assert isinstance(model, Segmentor)
    assert model.num_classes == 3 and model.out_channels == 3
    assert model.id2label == {0: "class0", 1: "class1", 2: "class2"}
    assert model.label2id == {"class0": 0, "class1": 1, "class2": 2}
    assert model.test_cfg == {"mode": "whole"}


def test_config_is_the_full_json_description():
    model = tiny_model()
    cfg = model.config
    assert json.loads(json.dumps(cfg)) == cfg  # JSON-able as is
    assert cfg["backbone"] == {
        "type": "_TestConvBackbone", "channels": 4, "pretrained": None, "init_cfg": None
    }
    head = cfg["decode_head"]  # the head's defaults are filled in, so config.json does not depend on them
    assert head["align_corners"] is False and head["ignore_index"] == 255 and head["out_channels"] is None
    loss = head["loss_decode"]
    assert loss["type"] == "CrossEntropyLoss" and loss["avg_non_ignore"] is False
    pre = cfg["data_preprocessor"]
    assert pre["type"] == "SegDataPreProcessor"
    assert pre["mean"] == [100.0, 110.0, 120.0]  # tuples became lists
    assert pre["size_divisor"] == 4 and pre["seg_pad_val"] == 255
    assert cfg["id2label"] == {"0": "class0", "1": "class1", "2": "class2"}
    assert cfg["format_version"] == 1 and cfg["init_cfg"] is None and cfg["neck"] is None


def test_bad_constructor_arguments_are_reported():
    with pytest.raises(ConfigError, match=r"model.backbone.channels: a set is not JSON-able"):
        Segmentor(**tiny_cfg(backbone=dict(type="_TestConvBackbone", channels={4})))
    with pytest.raises(ConfigError, match=r"model.backbone.type: unknown model type 'NoSuchNet'"):
        Segmentor(**tiny_cfg(backbone=dict(type="NoSuchNet")))
    with pytest.raises(ConfigError, match=r"model.id2label: expected keys 0..2"):
        Segmentor(**tiny_cfg(id2label={0: "a", 1: "b"}))
    with pytest.raises(ConfigError, match=r"test_cfg: mode 'slide' needs crop_size, stride"):
        Segmentor(**tiny_cfg(test_cfg={"mode": "slide"}))
    with pytest.raises(ConfigError, match=r"test_cfg.mode: expected 'whole' or 'slide'"):
        Segmentor(**tiny_cfg(test_cfg={"mode": "sliding"}))
    with pytest.raises(ConfigError, match=r"format_version: 2 is not supported"):
        Segmentor(**tiny_cfg(format_version=2))
    with pytest.raises(ValueError, match=r"unknown mode 'logits'; expected one of loss, predict, tensor"):
        tiny_model()(torch.zeros(1, 3, 8, 8), mode="logits")
    with pytest.raises(ValueError, match="needs data_samples"):
        tiny_model()(torch.zeros(1, 3, 8, 8), mode="loss")


# --- the three modes --------------------------------------------------------------------------------
def test_loss_mode_gives_decode_losses_that_backpropagate():
    model = tiny_model().train()
    samples = [sample_with(10, 14, label=1), sample_with(12, 8, label=2)]
    batch = {"inputs": random_images((10, 14), (12, 8)), "data_samples": samples}
    data = model.data_preprocessor(batch, training=True)
    losses = model(data["inputs"], data["data_samples"], mode="loss")
    assert set(losses) == {"decode.loss_ce", "decode.acc_seg"}
    assert losses["decode.loss_ce"].dim() == 0 and losses["decode.loss_ce"] > 0
    assert 0 <= float(losses["decode.acc_seg"]) <= 100
    sum(v for k, v in losses.items() if "loss" in k).backward()
    assert model.backbone.conv.weight.grad is not None and model.backbone.conv.weight.grad.abs().sum() > 0
    assert model.decode_head.conv_seg.weight.grad.abs().sum() > 0


def test_auxiliary_heads_add_prefixed_losses():
    aux = dict(type="_TestConvHead", in_channels=4, channels=2, num_classes=3, dropout_ratio=0.0)
    torch.manual_seed(0)
    single = Segmentor(**tiny_cfg(auxiliary_head=aux))
    torch.manual_seed(0)
    several = Segmentor(**tiny_cfg(auxiliary_head=[aux, aux]))
    pre = single.data_preprocessor
    data = pre({"inputs": random_images((8, 8)), "data_samples": [sample_with(8, 8, label=0)]}, training=True)
    assert set(single.loss(data["inputs"], data["data_samples"])) == {
        "decode.loss_ce", "decode.acc_seg", "aux.loss_ce", "aux.acc_seg"
    }
    assert set(several.loss(data["inputs"], data["data_samples"])) == {
        "decode.loss_ce", "decode.acc_seg", "aux_0.loss_ce", "aux_0.acc_seg", "aux_1.loss_ce", "aux_1.acc_seg"
    }


def test_tensor_mode_returns_the_heads_raw_logits():
    model = tiny_model()
    x = torch.randn(2, 3, 10, 14)
    logits = model(x)  # mode="tensor" is the default
    assert logits.shape == (2, 3, 5, 7)  # stride-2 backbone, no resizing
    assert torch.equal(logits, model.decode_head(model.backbone(x)))


def test_predict_undoes_padding_and_flip_and_resizes_to_ori_shape():
    model = tiny_model()
    # two non-square images of different sizes, as Resize left them; the second one was flipped
    inputs = random_images((10, 14), (12, 8))
    gt = torch.randint(0, 3, (1, 20, 28))
    a = sample_with(10, 14, ori=(20, 28), scale_factor=(0.5, 0.5))
    a.gt_sem_seg = PixelData(gt)
    b = sample_with(12, 8, ori=(6, 4), flip=True, flip_direction="horizontal")
    data = model.data_preprocessor({"inputs": inputs, "data_samples": [a, b]})
    assert data["inputs"].shape == (2, 3, 12, 16)  # padded to multiples of 4
    with torch.no_grad():
        out = model(data["inputs"], data["data_samples"], mode="predict")
        padded_logits = model.inference(data["inputs"], [s.metainfo for s in data["data_samples"]])
    assert padded_logits.shape == (2, 3, 12, 16)

    pa, pb = out
    assert pa.seg_logits.data.shape == (3, 20, 28) and pa.pred_sem_seg.data.shape == (1, 20, 28)
    assert pb.seg_logits.data.shape == (3, 6, 4) and pb.pred_sem_seg.data.shape == (1, 6, 4)
    assert pa.pred_sem_seg.data.dtype == torch.int64
    assert torch.equal(pa.gt_sem_seg.data, gt)  # labels pass through at their original size
    # by hand: crop the padding, (un-flip), resize bilinearly to ori_shape, argmax
    expect_a = F.interpolate(padded_logits[0:1, :, :10, :14], size=(20, 28), mode="bilinear")
    expect_b = F.interpolate(padded_logits[1:2, :, :12, :8].flip(-1), size=(6, 4), mode="bilinear")
    assert torch.equal(pa.seg_logits.data, expect_a[0])
    assert torch.equal(pb.seg_logits.data, expect_b[0])
    assert torch.equal(pa.pred_sem_seg.data, expect_a[0].argmax(0, keepdim=True))


def test_predict_unflips_a_flipped_input():
    """A flipped image predicted with flip metainfo = its prediction without, flipped back."""
    model = tiny_model()
    flipped = random_images((12, 10))[0].flip(-1)  # what RandomFlip handed to the model
    for direction, dims in (("horizontal", (-1,)), ("vertical", (-2,))):
        with_flip = sample_with(12, 10, flip=True, flip_direction=direction)
        without = sample_with(12, 10, flip=False)
        data = model.data_preprocessor({"inputs": [flipped, flipped], "data_samples": [with_flip, without]})
        with torch.no_grad():
            pf, pn = model.predict(data["inputs"], data["data_samples"])
        assert torch.equal(pf.seg_logits.data, pn.seg_logits.data.flip(dims))
        assert torch.equal(pf.pred_sem_seg.data, pn.pred_sem_seg.data.flip(dims))
    bad = sample_with(12, 10, flip=True, flip_direction="sideways")
    with pytest.raises(ValueError, match="flip_direction 'sideways'"):
        model.predict(torch.zeros(1, 3, 12, 10), [bad])


def test_predict_without_samples_uses_the_input_size():
    model = tiny_model()
    x = torch.randn(2, 3, 9, 13)
    with torch.no_grad():
        out = model.predict(x)
        logits = model.encode_decode(x, [{"pad_shape": (9, 13)}] * 2)
    assert [s.pred_sem_seg.shape for s in out] == [(9, 13), (9, 13)]
    assert torch.equal(out[1].seg_logits.data, logits[1])


def test_binary_head_thresholds_the_sigmoid():
    head = dict(type="_TestConvHead", in_channels=4, channels=4, num_classes=2, out_channels=1, threshold=0.5,
                dropout_ratio=0.0)
    torch.manual_seed(0)
    model = Segmentor(**tiny_cfg(decode_head=head, id2label=None, palette=None)).eval()
    x = torch.randn(1, 3, 8, 6)
    with torch.no_grad():
        (out,) = model.predict(x)
        logits = model.encode_decode(x, [{"pad_shape": (8, 6)}])
    assert torch.equal(out.seg_logits.data, logits[0].sigmoid())
    assert torch.equal(out.pred_sem_seg.data, (logits[0].sigmoid() > 0.5).long())


# --- the real SegFormer parts -----------------------------------------------------------------------
def segformer_cfg(num_classes: int = 4) -> dict:
    return dict(
        backbone=dict(type="MixVisionTransformer", in_channels=3, embed_dims=8, num_layers=(1, 1, 1, 1),
                      num_heads=(1, 1, 1, 1), drop_path_rate=0.0),
        decode_head=dict(type="SegformerHead", in_channels=[8, 8, 8, 8], in_index=[0, 1, 2, 3], channels=8,
                         num_classes=num_classes, dropout_ratio=0.0),
        data_preprocessor=dict(size_divisor=32),
    )


def test_tiny_segformer_trains_predicts_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = Segmentor(**segformer_cfg())
    samples = [sample_with(40, 56, label=1), sample_with(36, 30, label=3)]
    batch = {"inputs": random_images((40, 56), (36, 30)), "data_samples": samples}
    data = model.data_preprocessor(batch, training=True)
    losses = model(data["inputs"], data["data_samples"], mode="loss")
    assert set(losses) == {"decode.loss_ce", "decode.acc_seg"}
    losses["decode.loss_ce"].backward()
    grads = [p.grad for name, p in model.named_parameters() if name.startswith("backbone.")]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0

    model.eval()
    with torch.no_grad():
        logits = model(data["inputs"])
        out = model.predict(data["inputs"], data["data_samples"])
    assert logits.shape == (2, 4, 16, 16)  # 1/4 of the padded (64, 64)
    assert [s.pred_sem_seg.shape for s in out] == [(40, 56), (36, 30)]

    model.save_pretrained(tmp_path)
    loaded = Segmentor.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(data["inputs"]), logits)
