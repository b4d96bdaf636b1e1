"""Existing transformers SegFormer repos on the Hub, read offline from a hand-built cache.

`Segmentor.from_pretrained` on a `model_type: segformer` repo converts it on load (same logits as
transformers); `pretrained: <repo>` on MiT starts from an ImageNet encoder repo; convert_checkpoint.py
writes the converted model as a segaccel repo. transformers is a test-only dependency.
"""

from __future__ import annotations

import importlib.util
import json
import logging

import numpy as np
import pytest
import torch
from hub_testing import REPO_ROOT, cache_folder, cache_repo

from segaccel.inference import inference_model
from segaccel.models import Segmentor
from segaccel.models.weights import load_pretrained_weights
from segaccel.registry import ConfigError

transformers = pytest.importorskip("transformers")

ID2LABEL = {0: "wall", 1: "building", 2: "sky", 3: "floor"}
PREPROCESSOR = {
    "image_processor_type": "SegformerImageProcessor",
    "do_resize": True,
    "size": {"height": 64, "width": 96},
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "do_reduce_labels": True,
}


def tiny_config(**overrides):
    kwargs = dict(
        depths=[1, 1, 1, 1],
        sr_ratios=[4, 2, 2, 1],
        hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 2, 3, 4],
        mlp_ratios=[2, 2, 2, 2],
        decoder_hidden_size=16,
        id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()},
        drop_path_rate=0.0,
    )
    return transformers.SegformerConfig(**{**kwargs, **overrides})


def randomised(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                if name.endswith("running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
                else:
                    tensor.add_(0.2 * torch.randn(tensor.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def tf_repo(tmp_path_factory):
    """A random tiny SegformerForSemanticSegmentation saved by transformers (+ its preprocessor config)."""
    torch.manual_seed(0)
    model = randomised(transformers.SegformerForSemanticSegmentation(tiny_config()))
    folder = tmp_path_factory.mktemp("segformer-tiny-ade")
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return model, folder


def test_from_pretrained_converts_a_cached_transformers_repo(tf_repo, offline_cache, caplog):
    tf_model, folder = tf_repo
    cache_folder(offline_cache, "nvidia/segformer-tiny-finetuned-ade", folder)
    with caplog.at_level(logging.INFO, logger="segaccel.models"):
        ours = Segmentor.from_pretrained("nvidia/segformer-tiny-finetuned-ade")
    assert "model_type: segformer" in caplog.text
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tf_model(pixel_values=x).logits, rtol=0, atol=1e-5)
    assert ours.id2label == ID2LABEL and ours.num_classes == 4
    assert ours.test_pipeline == [{"type": "Resize", "scale": [96, 64], "keep_ratio": False}]
    assert ours.config["data_preprocessor"]["mean"] == [123.675, 116.28, 103.53]


def test_a_converted_model_segments_an_image_as_transformers_does(tf_repo, offline_cache):
    """Whole pipeline: transformers' processor + model + post-processing vs inference_model."""
    tf_model, folder = tf_repo
    cache_folder(offline_cache, "org/tf-seg", folder)
    ours = Segmentor.from_pretrained("org/tf-seg")
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)  # the processor's size
    processor = transformers.SegformerImageProcessor(**PREPROCESSOR)
    with torch.no_grad():
        pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
        logits = tf_model(pixel_values=pixel_values).logits
    upsampled = torch.nn.functional.interpolate(logits, size=(64, 96), mode="bilinear", align_corners=False)[
        0
    ]
    sample = inference_model(ours, image)
    torch.testing.assert_close(sample.seg_logits.data, upsampled, rtol=0, atol=1e-4)
    expected = processor.post_process_semantic_segmentation(
        transformers.modeling_outputs.SemanticSegmenterOutput(logits=logits), target_sizes=[(64, 96)]
    )[0]
    assert (sample.pred_sem_seg.data[0] == expected).float().mean() > 0.999


def test_fine_tuning_and_load_from_a_transformers_repo(tf_repo, offline_cache, caplog):
    tf_model, folder = tf_repo
    cache_folder(offline_cache, "nvidia/segformer-tiny-finetuned-ade", folder)
    with caplog.at_level(logging.WARNING, logger="segaccel.models"):
        two = Segmentor.from_pretrained("nvidia/segformer-tiny-finetuned-ade", id2label={0: "bg", 1: "road"})
    assert two.num_classes == 2 and "decode_head.conv_seg.weight" in caplog.text
    converted = Segmentor.from_pretrained("nvidia/segformer-tiny-finetuned-ade")
    assert torch.equal(
        two.backbone.layers[2][1][0].attn.attn.in_proj_weight,
        converted.backbone.layers[2][1][0].attn.attn.in_proj_weight,
    )
    # load_from: a transformers repo id, converted into a model built from a config
    target = Segmentor(**{**converted.config_for_saving(), "id2label": None})
    load_pretrained_weights(target, "nvidia/segformer-tiny-finetuned-ade", strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(target.eval()(x), converted(x))


def test_mit_pretrained_from_an_imagenet_encoder_repo(tmp_path, offline_cache, caplog):
    torch.manual_seed(1)
    encoder = randomised(
        transformers.SegformerForImageClassification(
            tiny_config(num_labels=1000, id2label=None, label2id=None)
        ),
        seed=2,
    )
    encoder.save_pretrained(tmp_path / "mit-tiny")
    cache_folder(offline_cache, "nvidia/mit-tiny", tmp_path / "mit-tiny")
    backbone = dict(
        type="MixVisionTransformer",
        embed_dims=8,
        num_layers=[1, 1, 1, 1],
        num_heads=[1, 2, 3, 4],
        sr_ratios=[4, 2, 2, 1],
        mlp_ratio=2,
        drop_path_rate=0.0,
        layer_norm_eps=1e-5,
        pretrained="nvidia/mit-tiny",
    )
    head = dict(type="SegformerHead", in_channels=[8, 16, 24, 32], channels=16, num_classes=3)
    model = Segmentor(backbone=backbone, decode_head=head).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        theirs = encoder.segformer(x, output_hidden_states=True).hidden_states
        for a, b in zip(model.backbone(x), theirs):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)

    # the saved model never points at the encoder repo again: it loads with the repo gone
    model.save_pretrained(tmp_path / "finished")
    assert json.loads((tmp_path / "finished" / "config.json").read_text())["backbone"]["pretrained"] is None
    for path in sorted(offline_cache.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    reloaded = Segmentor.from_pretrained(tmp_path / "finished")
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))

    # MMSegmentation's eps with transformers' weights: it works, and says what differs
    cache_folder(offline_cache, "nvidia/mit-tiny", tmp_path / "mit-tiny")
    with caplog.at_level(logging.WARNING, logger="segaccel.models"):
        Segmentor(backbone={**backbone, "layer_norm_eps": 1e-6}, decode_head=head)
    assert "layer_norm_eps=1e-06" in caplog.text
    with pytest.raises(RuntimeError, match="does not match this MixVisionTransformer"):
        Segmentor(backbone={**backbone, "num_layers": [2, 1, 1, 1]}, decode_head=head)
    cache_repo(offline_cache, "org/not-segformer", {"config.json": b'{"model_type": "vit"}'})
    with pytest.raises(ConfigError, match="neither a local weights file nor a transformers SegFormer"):
        Segmentor(backbone={**backbone, "pretrained": "org/not-segformer"}, decode_head=head)


def test_convert_checkpoint_script_writes_a_segaccel_repo(tf_repo, tmp_path, offline_cache, capsys):
    tf_model, folder = tf_repo
    cache_folder(offline_cache, "nvidia/segformer-tiny-finetuned-ade", folder)
    spec = importlib.util.spec_from_file_location(
        "convert_checkpoint", REPO_ROOT / "scripts" / "convert_checkpoint.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = script.main(["nvidia/segformer-tiny-finetuned-ade", str(tmp_path / "converted")])
    assert "reloaded logits differ by at most 0" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert "model_type" not in config and config["decode_head"]["projection"] == "linear"
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(
            Segmentor.from_pretrained(out)(x), tf_model(pixel_values=x).logits, rtol=0, atol=1e-5
        )
