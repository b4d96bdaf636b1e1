"""Tiny images through whole and slide inference: a prediction at `ori_shape`, never PyTorch's own error.

The models are the repository's real configs (SegFormer MiT-B0 layout, PSPNet, DeepLabV3+, FCN with a
dilated ResNet-V1c), scaled down to tiny widths. Their `size` (the crop size) pads training batches only; at
test time (as in MMSegmentation, and with or without it) a 20x20 image reaches MiT as it is, and MiT's first
spatial-reduction conv (8x8, stride 8) needs a stage-1 map of at least 8x8, i.e.
`(H - 1) // 4 + 1 >= 8`, an input of at least 29 pixels a side: before the fix that raised "Kernel size
can't be greater than actual input size". Slide windows smaller than `crop_size` are padded up to it with
the preprocessor's `pad_val`; whole inference pads only what the network cannot take, to
`min_input_size`.
"""

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import segaccel.models  # noqa: F401  (registers the model parts)
from segaccel.config import load_config
from segaccel.inference import inference_model
from segaccel.models import SegTTAModel
from segaccel.registry import MODELS
from segaccel.structures import SegDataSample

ROOT = Path(__file__).resolve().parents[2]
NUM_CLASSES = 5
CROP, STRIDE = (32, 32), (24, 24)
SLIDE = {"mode": "slide", "crop_size": list(CROP), "stride": list(STRIDE)}
TINY_RESNET = [
    "model.backbone.pretrained=null",
    "model.backbone.base_channels=4",  # MMSegmentation's ResNetV1c-50, 4 to 32 (x4) channels
    "model.backbone.stem_channels=8",
    "model.decode_head.in_channels=128",
    "model.decode_head.channels=16",
    "model.auxiliary_head.in_channels=64",
    "model.auxiliary_head.channels=8",
    f"model.decode_head.num_classes={NUM_CLASSES}",
    f"model.auxiliary_head.num_classes={NUM_CLASSES}",
]
CONFIGS = {
    "segformer": (
        "configs/segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.yaml",
        [
            "model.backbone.pretrained=null",
            "model.backbone.embed_dims=8",
            "model.backbone.num_layers=[1, 1, 1, 1]",
            "model.decode_head.in_channels=[8, 16, 40, 64]",
            "model.decode_head.channels=16",
            f"model.decode_head.num_classes={NUM_CLASSES}",
        ],
    ),
    "pspnet": ("configs/pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.yaml", TINY_RESNET),
    "deeplabv3plus": (
        "configs/deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.yaml",
        [*TINY_RESNET, "model.decode_head.c1_in_channels=16", "model.decode_head.c1_channels=8"],
    ),
    "fcn": ("configs/fcn/fcn_r50-d8_4xb2-80k_cityscapes-512x1024.yaml", TINY_RESNET),
}
# 1x1, odd and thin sizes, one smaller than the crop, ones smaller than the crop in one dimension only
SIZES = [(1, 1), (3, 5), (7, 40), (17, 9), (20, 20), (20, 80), (45, 12), (32, 32)]


def build(name: str, mode: str, training_padding: bool) -> torch.nn.Module:
    """The tiny model of a config (built once per config and padding setting), set to `mode`."""
    model = _build(name, training_padding)
    model.test_cfg = SLIDE if mode == "slide" else {"mode": "whole"}
    return model


@functools.cache
def _build(name: str, training_padding: bool) -> torch.nn.Module:
    path, overrides = CONFIGS[name]
    if name != "segformer":
        pytest.importorskip("timm")
    if not training_padding:
        no_padding = ["model.data_preprocessor.size=null", "model.data_preprocessor.size_divisor=null"]
        overrides = [*overrides, *no_padding]
    torch.manual_seed(0)
    return MODELS.build(load_config(ROOT / path, overrides)["model"], key="model").eval()


def image(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(h * 1000 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("training_padding", [True, False], ids=["training_padding", "no_training_padding"])
@pytest.mark.parametrize("mode", ["whole", "slide"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_size_and_mode_gives_a_prediction_at_ori_shape(name, mode, training_padding):
    model = build(name, mode, training_padding)
    results = inference_model(model, [image(h, w) for h, w in SIZES])
    for (h, w), result in zip(SIZES, results):
        assert tuple(result.ori_shape) == (h, w)
        assert tuple(result.pred_sem_seg.data.shape) == (1, h, w)
        assert tuple(result.seg_logits.data.shape) == (NUM_CLASSES, h, w)
        assert torch.isfinite(result.seg_logits.data).all()
        assert set(torch.unique(result.pred_sem_seg.data).tolist()) <= set(range(NUM_CLASSES))


def test_min_input_size_is_what_the_network_takes():
    mit = build("segformer", "whole", False)
    assert mit.min_input_size() == (29, 29)  # (H - 1) // 4 + 1 >= sr_ratio 8, by hand
    with torch.no_grad():
        mit.encode_decode(torch.zeros(1, 3, 29, 29), [{"pad_shape": (29, 29)}])
        with pytest.raises(RuntimeError, match="Kernel size can't be greater than actual input size"):
            mit.encode_decode(torch.zeros(1, 3, 28, 64), [{"pad_shape": (28, 64)}])
    pytest.importorskip("timm")
    assert build("pspnet", "whole", False).min_input_size() == (1, 1)  # a ResNet takes 1x1: never padded


def test_whole_pads_only_what_the_network_cannot_take():
    model = build("segformer", "whole", False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for h, w in [(29, 29), (29, 64), (64, 33)]:  # these already worked: the very same logits
            x = torch.randn(1, 3, h, w, generator=g)
            meta = {"ori_shape": (h, w), "img_shape": (h, w), "pad_shape": (h, w)}
            assert torch.equal(model.inference(x, [meta]), model.encode_decode(x, [meta]))
        for h, w in [(1, 1), (20, 20), (7, 40), (28, 64)]:  # padded with pad_val to >= 29 x 29, cropped
            x = torch.randn(1, 3, h, w, generator=g)
            ph, pw = max(h, 29), max(w, 29)
            padded = F.pad(x, (0, pw - w, 0, ph - h), value=0.0)
            expected = model.encode_decode(padded, [{"pad_shape": (ph, pw)}])[:, :, :h, :w]
            got = model.inference(x, [{"ori_shape": (h, w), "img_shape": (h, w)}])
            assert got.shape == (1, NUM_CLASSES, h, w)
            assert torch.equal(got, expected)


@pytest.mark.parametrize("name", ["segformer", "pspnet"])
def test_slide_windows_are_padded_to_the_crop(name):
    def infer(mode, x, metas):
        return build(name, mode, False).inference(x, metas)

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # an image exactly crop-size: one window, the same logits as whole inference
        x = torch.randn(2, 3, *CROP, generator=g)
        metas = [{"ori_shape": CROP, "img_shape": CROP}] * 2
        assert torch.equal(infer("slide", x, metas), infer("whole", x, metas))
        # smaller than the crop: whole inference of the image padded to the crop, cropped back
        for h, w in [(1, 1), (3, 5), (20, 20), (17, 9)]:
            x = torch.randn(1, 3, h, w, generator=g)
            padded = F.pad(x, (0, CROP[1] - w, 0, CROP[0] - h), value=0.0)
            expected = infer("whole", padded, [{"img_shape": CROP}])[:, :, :h, :w]
            got = infer("slide", x, [{"ori_shape": (h, w), "img_shape": (h, w)}])
            assert torch.equal(got, expected)


def test_slide_pads_a_window_smaller_than_the_crop_in_one_dimension():
    """20x80, crop 32x32 every 24: windows x in [0, 32), [24, 56), [48, 80), each 20x32 padded to 32x32."""
    model = build("segformer", "slide", False)
    x = torch.randn(1, 3, 20, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model.inference(x, [{"ori_shape": (20, 80), "img_shape": (20, 80)}])
        win = [
            model.encode_decode(F.pad(x[..., x1 : x1 + 32], (0, 0, 0, 12)), [{"pad_shape": CROP}])[
                ..., :20, :
            ]
            for x1 in (0, 24, 48)
        ]
    torch.testing.assert_close(out[..., 0:24], win[0][..., 0:24])
    torch.testing.assert_close(out[..., 24:32], (win[0][..., 24:32] + win[1][..., 0:8]) / 2)
    torch.testing.assert_close(out[..., 32:48], win[1][..., 8:24])
    torch.testing.assert_close(out[..., 48:56], (win[1][..., 24:32] + win[2][..., 0:8]) / 2)
    torch.testing.assert_close(out[..., 56:80], win[2][..., 8:32])


def test_padding_uses_the_preprocessors_pad_val():
    cfg = load_config(ROOT / CONFIGS["segformer"][0], CONFIGS["segformer"][1])["model"]
    cfg = {**cfg, "test_cfg": SLIDE}
    cfg["data_preprocessor"] = {**cfg["data_preprocessor"], "size_divisor": None, "pad_val": 3.0}
    torch.manual_seed(0)
    model = MODELS.build(cfg, key="model").eval()
    x = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = model.inference(x, [{"img_shape": (20, 20)}])
        by_3 = model.encode_decode(F.pad(x, (0, 12, 0, 12), value=3.0), [{"pad_shape": CROP}])
        by_0 = model.encode_decode(F.pad(x, (0, 12, 0, 12), value=0.0), [{"pad_shape": CROP}])
    assert torch.equal(got, by_3[..., :20, :20])
    assert not torch.allclose(got, by_0[..., :20, :20])


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_a_padded_batch_of_tiny_images_comes_back_at_each_ori_shape(mode):
    model = build("segformer", mode, False)
    sizes = [(3, 5), (17, 9), (1, 1)]
    g = torch.Generator().manual_seed(4)
    batch = {
        "inputs": [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes],
        "data_samples": [
            SegDataSample(metainfo={"img_id": f"{h}x{w}", "ori_shape": (h, w)}) for h, w in sizes
        ],
    }
    data = model.data_preprocessor(batch, training=False)
    assert tuple(data["inputs"].shape[-2:]) == (17, 9)
    with torch.no_grad():
        samples = model.predict(data["inputs"], data["data_samples"])
    for (h, w), sample in zip(sizes, samples):
        assert tuple(sample.pred_sem_seg.data.shape) == (1, h, w)
        assert tuple(sample.seg_logits.data.shape) == (NUM_CLASSES, h, w)


def test_tta_scales_a_tiny_image_below_the_minimum_and_still_predicts():
    tta = SegTTAModel(build("segformer", "whole", False), scales=[0.5, 1.0, 1.5], flip=True)
    batch = {
        "inputs": [torch.full((3, 9, 7), 100, dtype=torch.uint8)],
        "data_samples": [SegDataSample(metainfo={"ori_shape": (9, 7)})],
    }
    data = tta.data_preprocessor(batch, training=False)
    (sample,) = tta.predict(data["inputs"], data["data_samples"])
    assert tuple(sample.pred_sem_seg.data.shape) == (1, 9, 7)
    torch.testing.assert_close(sample.seg_logits.data.sum(0), torch.ones(9, 7))  # averaged probabilities


def test_finding_the_minimum_leaves_the_model_as_it_was():
    path, overrides = CONFIGS["segformer"]
    torch.manual_seed(0)
    model = MODELS.build(load_config(ROOT / path, overrides)["model"], key="model").train()
    model.decode_head.fusion_conv.eval()  # a frozen part of a training model stays frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.min_input_size() == (29, 29)
    assert model.training and model.backbone.training and not model.decode_head.fusion_conv.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics untouched
    calls = []
    model.encode_decode = lambda x, metas: calls.append(x.shape) or torch.zeros(1)
    assert model.min_input_size() == (29, 29) and not calls  # found once, then kept
