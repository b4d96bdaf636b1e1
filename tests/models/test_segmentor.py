"""Segmentor: loss / predict / tensor modes, whole and slide inference, and the Hub round trip.

Most tests use a one-conv backbone and a minimal head (registered below under test names) so the
numbers can be followed by hand; the last ones use the real tiny MiT + SegformerHead.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from segaccel.models import Segmentor
from segaccel.models.heads.decode_head import BaseDecodeHead
from segaccel.registry import MODELS, ConfigError
from segaccel.structures import PixelData, SegDataSample


class _TestConvBackbone(nn.Module):
    """One 3x3 conv with stride 2: `(N, 3, H, W)` → `[(N, channels, ceil(H/2), ceil(W/2))]`."""

    def __init__(
        self, channels: int = 4, pretrained: str | None = None, init_cfg: dict | None = None
    ) -> None:
        super().__init__()
        self.pretrained = pretrained  # recorded only: the test checks it is dropped when saving
        self.conv = nn.Conv2d(3, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.relu(self.conv(x))]


class _TestConvHead(BaseDecodeHead):
    """The smallest decode head: one 1x1 conv, then the classifier."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conv = nn.Conv2d(self.in_channels, self.channels, 1)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(torch.relu(self.conv(self._transform_inputs(inputs))))


for _cls in (_TestConvBackbone, _TestConvHead):
    if _cls.__name__ not in MODELS:
        MODELS.register(_cls)


def tiny_cfg(num_classes: int = 3, **overrides) -> dict:
    cfg = dict(
        backbone=dict(type="_TestConvBackbone", channels=4),
        decode_head=dict(
            type="_TestConvHead", in_channels=4, channels=4, num_classes=num_classes, dropout_ratio=0.0
        ),
        data_preprocessor=dict(mean=(100.0, 110.0, 120.0), std=(50.0, 51.0, 52.0), size_divisor=4),
        id2label={i: f"class{i}" for i in range(num_classes)},
        palette=[[i, 2 * i, 3 * i] for i in range(num_classes)],
        test_pipeline=[dict(type="Resize", scale=(16, 12), keep_ratio=True)],
    )
    cfg.update(overrides)
    return cfg


def tiny_model(seed: int = 0, **overrides) -> Segmentor:
    torch.manual_seed(seed)
    return Segmentor(**tiny_cfg(**overrides)).eval()


def _sample(h: int, w: int, ori: tuple | None = None, label: int | None = None, **meta) -> SegDataSample:
    ori = ori or (h, w)
    sample = SegDataSample(metainfo={"img_id": f"{h}x{w}", "ori_shape": ori, "img_shape": (h, w), **meta})
    if label is not None:
        sample.gt_sem_seg = PixelData(torch.full((1, *ori), label, dtype=torch.int64))
    return sample


def _images(*shapes: tuple[int, int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in shapes]


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
    samples = [_sample(10, 14, label=1), _sample(12, 8, label=2)]
    batch = {"inputs": _images((10, 14), (12, 8)), "data_samples": samples}
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
    data = pre({"inputs": _images((8, 8)), "data_samples": [_sample(8, 8, label=0)]}, training=True)
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
    inputs = _images((10, 14), (12, 8))
    gt = torch.randint(0, 3, (1, 20, 28))
    a = _sample(10, 14, ori=(20, 28), scale_factor=(0.5, 0.5))
    a.gt_sem_seg = PixelData(gt)
    b = _sample(12, 8, ori=(6, 4), flip=True, flip_direction="horizontal")
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
    flipped = _images((12, 10))[0].flip(-1)  # what RandomFlip handed to the model
    for direction, dims in (("horizontal", (-1,)), ("vertical", (-2,))):
        with_flip = _sample(12, 10, flip=True, flip_direction=direction)
        without = _sample(12, 10, flip=False)
        data = model.data_preprocessor({"inputs": [flipped, flipped], "data_samples": [with_flip, without]})
        with torch.no_grad():
            pf, pn = model.predict(data["inputs"], data["data_samples"])
        assert torch.equal(pf.seg_logits.data, pn.seg_logits.data.flip(dims))
        assert torch.equal(pf.pred_sem_seg.data, pn.pred_sem_seg.data.flip(dims))
    bad = _sample(12, 10, flip=True, flip_direction="sideways")
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


# --- Hub: save_pretrained / from_pretrained ---------------------------------------------------------
def test_save_and_load_round_trip_gives_identical_logits(tmp_path):
    model = tiny_model(backbone=dict(type="_TestConvBackbone", channels=4, pretrained="imagenet.safetensors",
                                     init_cfg={"type": "Pretrained", "checkpoint": "x.pth"}))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "config.json").read_text())
    # the full description, pointing at no pretrained weights any more
    assert saved["backbone"] == {
        "type": "_TestConvBackbone", "channels": 4, "pretrained": None, "init_cfg": None
    }
    assert saved["decode_head"] == model.config["decode_head"]
    assert saved["data_preprocessor"]["std"] == [50.0, 51.0, 52.0]
    assert saved["id2label"] == {"0": "class0", "1": "class1", "2": "class2"}
    assert saved["palette"] == [[0, 0, 0], [1, 2, 3], [2, 4, 6]]
    assert saved["test_pipeline"] == [{"type": "Resize", "scale": [16, 12], "keep_ratio": True}]
    assert saved["test_cfg"] == {"mode": "whole"} and saved["format_version"] == 1

    loaded = Segmentor.from_pretrained(tmp_path)
    assert not loaded.training
    assert loaded.id2label == {0: "class0", 1: "class1", 2: "class2"}  # int keys again
    assert loaded.backbone.pretrained is None
    x = torch.randn(2, 3, 10, 14)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # loading again and saving again is a fixed point
    loaded.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == saved


def test_from_pretrained_overrides_and_map_location(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    slide = {"mode": "slide", "crop_size": [8, 8], "stride": [4, 4]}
    loaded = Segmentor.from_pretrained(tmp_path, test_cfg=slide, map_location="cpu", local_files_only=True)
    assert loaded.test_cfg == slide
    assert next(loaded.parameters()).device.type == "cpu"


def test_settings_changed_on_the_model_are_checked_and_saved(tmp_path):
    model = tiny_model()
    model.test_cfg = {"mode": "slide", "crop_size": (8, 8), "stride": 4}
    assert model.test_cfg == {"mode": "slide", "crop_size": [8, 8], "stride": [4, 4]}
    model.id2label = {"0": "sky", "1": "road", "2": "car"}
    assert model.id2label == {0: "sky", 1: "road", 2: "car"} and model.label2id["car"] == 2
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["test_cfg"]["mode"] == "slide" and saved["id2label"]["2"] == "car"
    assert Segmentor.from_pretrained(tmp_path).label2id == {"sky": 0, "road": 1, "car": 2}

    with pytest.raises(ConfigError, match="expected keys 0..2"):
        model.id2label = {0: "sky"}
    with pytest.raises(ConfigError, match="label2id .* does not match model.id2label"):
        model.label2id = {"sky": 1}
    model.test_cfg["stride"] = "big"  # edited in place: caught before inference
    with pytest.raises(ConfigError, match=r"test_cfg.stride: expected a positive int or \(h, w\)"):
        model.predict(torch.zeros(1, 3, 8, 8))


def test_from_pretrained_is_strict_and_names_the_keys(tmp_path, caplog):
    tiny_model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["decode_head.conv_seg.bias"]
    weights["decode_head.extra.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(RuntimeError) as info:
        Segmentor.from_pretrained(tmp_path)
    message = str(info.value)
    assert "missing keys (in the model, not in the weights): decode_head.conv_seg.bias" in message
    assert "unexpected keys (in the weights, not in the model): decode_head.extra.weight" in message
    with caplog.at_level(logging.WARNING, logger="segaccel.models"):
        loaded = Segmentor.from_pretrained(tmp_path, strict=False)
    assert "decode_head.conv_seg.bias" in caplog.text
    assert torch.equal(loaded.decode_head.conv_seg.weight, weights["decode_head.conv_seg.weight"])


def test_shape_mismatch_raises_unless_the_class_count_is_changed(tmp_path, caplog):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["backbone.conv.bias"] = torch.zeros(5)
    save_file(weights, tmp_path / "other.safetensors")
    with pytest.raises(RuntimeError, match=r"backbone.conv.bias: weights \(5,\) vs model \(4,\)"):
        model.load_weights(weights, source="other.safetensors")

    # fine-tuning to 5 classes: the classifier is re-initialised (and said so), the rest is loaded
    with caplog.at_level(logging.WARNING, logger="segaccel.models"):
        five = Segmentor.from_pretrained(tmp_path, num_classes=5)
    assert five.num_classes == 5 and five.decode_head.conv_seg.weight.shape[0] == 5
    assert five.id2label is None and five.palette is None  # the saved names were for 3 classes
    assert "decode_head.conv_seg.weight" in caplog.text and "re-initialised" in caplog.text
    assert torch.equal(five.backbone.conv.weight, model.backbone.conv.weight)
    named = Segmentor.from_pretrained(tmp_path, id2label={"0": "a", "1": "b"})
    assert named.num_classes == 2 and named.label2id == {"a": 0, "b": 1}


def test_config_json_types_resolve_only_through_the_registry(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["backbone"]["type"] = "torch.nn.Conv2d"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config.json: model.backbone.type: unknown model type 'torch.nn"):
        Segmentor.from_pretrained(tmp_path)
    cfg["backbone"]["type"] = "_TestConvBackbone"
    cfg["extra_thing"] = 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="config.json: unknown entries extra_thing"):
        Segmentor.from_pretrained(tmp_path)


def test_pytorch_model_bin_is_loaded_with_weights_only(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    loaded = Segmentor.from_pretrained(tmp_path)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="no weights file"):
        Segmentor.from_pretrained(tmp_path)


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
    samples = [_sample(40, 56, label=1), _sample(36, 30, label=3)]
    batch = {"inputs": _images((40, 56), (36, 30)), "data_samples": samples}
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
