"""transformers Mask2Former and EoMT repos on the Hub, read offline from a hand-built cache.

`Segmentor.from_pretrained` on a `model_type: mask2former` or `model_type: eomt` repo converts it on
load (normalisation, resize, windows and class names from the repo; the same logits as transformers);
`load_from` takes such a repo id; `convert_checkpoint.py` writes it as a segaccel repo. transformers is
a test-only dependency; the repos are tiny random models saved here.
"""

from __future__ import annotations

import importlib.util
import json
import logging

import numpy as np
import pytest
import torch
from hub_testing import REPO_ROOT, cache_folder

from segaccel.inference import inference_model
from segaccel.models import Segmentor
from segaccel.models.weights import load_pretrained_weights

transformers = pytest.importorskip("transformers")
pytest.importorskip("timm")

ID2LABEL = {0: "wall", 1: "building", 2: "sky", 3: "floor", 4: "tree"}
MASK2FORMER_PREPROCESSOR = {
    "image_processor_type": "Mask2FormerImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 64, "longest_edge": 256},
    "size_divisor": 32,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "ignore_index": 255,
    "do_reduce_labels": True,
}
EOMT_PREPROCESSOR = {
    "image_processor_type": "EomtImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 64, "longest_edge": None},
    "do_split_image": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}


def randomised(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and name != "attn_mask_probs":
                tensor.add_(0.2 * torch.randn(tensor.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def mask2former_repo(tmp_path_factory):
    """A tiny random Mask2Former with a Swin backbone, saved by transformers with its preprocessor."""
    swin = transformers.SwinConfig(
        embed_dim=32,
        depths=[1, 1, 1, 1],
        num_heads=[2, 2, 4, 4],
        window_size=2,
        drop_path_rate=0.0,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.Mask2FormerConfig(
        backbone_config=swin,
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        encoder_feedforward_dim=48,
        dim_feedforward=48,
        encoder_layers=1,
        decoder_layers=3,
        num_attention_heads=4,
        num_queries=8,
        id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()},
    )
    torch.manual_seed(0)
    model = randomised(transformers.Mask2FormerForUniversalSegmentation(config))
    folder = tmp_path_factory.mktemp("mask2former-swin-tiny-ade-semantic")
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(MASK2FORMER_PREPROCESSOR))
    return model, folder


@pytest.fixture(scope="module")
def eomt_repo(tmp_path_factory):
    config = transformers.EomtConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        image_size=64,
        patch_size=16,
        num_blocks=2,
        num_queries=6,
        id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()},
    )
    torch.manual_seed(0)
    model = randomised(transformers.EomtForUniversalSegmentation(config))
    with torch.no_grad():
        model.attn_mask_probs.zero_()  # annealed, as in a trained checkpoint
        model.layernorm.weight.mul_(10)  # sharper queries: maps of several classes
    folder = tmp_path_factory.mktemp("ade20k_semantic_eomt_tiny_64")
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(EOMT_PREPROCESSOR))
    return model, folder


def test_from_pretrained_converts_a_cached_mask2former_repo(mask2former_repo, offline_cache, caplog):
    theirs, folder = mask2former_repo
    cache_folder(offline_cache, "facebook/mask2former-swin-tiny-ade-semantic", folder)
    with caplog.at_level(logging.INFO, logger="segaccel.models"):
        ours = Segmentor.from_pretrained("facebook/mask2former-swin-tiny-ade-semantic")
    assert "model_type: mask2former" in caplog.text
    assert ours.config["backbone"]["type"] == "SwinTransformer"
    assert ours.config["decode_head"]["type"] == "Mask2FormerHead"
    assert ours.id2label == ID2LABEL and ours.num_classes == 5
    assert ours.test_pipeline == [{"type": "ResizeShortestEdge", "scale": 64, "max_size": 256}]
    pre = ours.config["data_preprocessor"]
    assert pre["mean"] == [123.675, 116.28, 103.53] and pre["std"] == [58.395, 57.12, 57.375]
    assert pre["size_divisor"] == 32
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = theirs(pixel_values=x)
        all_cls, all_masks = ours.decode_head(ours.extract_feat(x))
    torch.testing.assert_close(all_cls[-1], out.class_queries_logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(all_masks[-1], out.masks_queries_logits, rtol=0, atol=1e-4)


def test_from_pretrained_converts_a_cached_eomt_repo(eomt_repo, offline_cache):
    theirs, folder = eomt_repo
    cache_folder(offline_cache, "tue-mps/ade20k_semantic_eomt_tiny_64", folder)
    ours = Segmentor.from_pretrained("tue-mps/ade20k_semantic_eomt_tiny_64")
    assert ours.config["backbone"]["model_name"] == "vit_small_patch14_reg4_dinov2"
    assert ours.test_cfg == {"mode": "slide", "crop_size": [64, 64], "stride": [64, 64]}
    assert ours.decode_head.attn_mask_probs.tolist() == [0.0, 0.0]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = theirs(pixel_values=x)
        all_cls, all_masks = ours.decode_head(ours.extract_feat(x))
    assert len(all_cls) == 1  # no masking left: no intermediate prediction
    torch.testing.assert_close(all_cls[-1], out.class_queries_logits, rtol=0, atol=1e-4)
    # this repo's final norm is sharpened 10x (see eomt_repo): mask logits of ~1e3, compared at 1e-3
    torch.testing.assert_close(all_masks[-1], out.masks_queries_logits, rtol=0, atol=1e-3)


def test_an_eomt_repo_segments_an_image_as_transformers_does(eomt_repo, offline_cache):
    """Whole pipeline on a 64x112 image: transformers' processor (two windows) + model + post-processing
    against `inference_model` (test pipeline, preprocessor, slide inference)."""
    theirs, folder = eomt_repo
    cache_folder(offline_cache, "org/eomt-tiny", folder)
    ours = Segmentor.from_pretrained("org/eomt-tiny")
    coarse = np.random.default_rng(0).integers(0, 256, (4, 7, 3)).astype(np.float32)
    image = torch.nn.functional.interpolate(
        torch.from_numpy(coarse).permute(2, 0, 1)[None], size=(64, 112), mode="bilinear"
    )[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    processor = transformers.EomtImageProcessor(**EOMT_PREPROCESSOR)
    encoded = processor(images=[image], return_tensors="pt")
    with torch.no_grad():
        out = theirs(pixel_values=encoded["pixel_values"], patch_offsets=encoded["patch_offsets"])
    expected = processor.post_process_semantic_segmentation(out, target_sizes=[(64, 112)])[0]
    sample = inference_model(ours, image)
    agreement = (sample.pred_sem_seg.data[0] == expected).float().mean().item()
    assert agreement >= 0.999, agreement
    assert len(expected.unique()) >= 2


def test_load_from_and_fine_tuning_from_a_mask2former_repo(mask2former_repo, offline_cache, caplog):
    _, folder = mask2former_repo
    cache_folder(offline_cache, "facebook/mask2former-swin-tiny-ade-semantic", folder)
    converted = Segmentor.from_pretrained("facebook/mask2former-swin-tiny-ade-semantic")
    target = Segmentor(**{**converted.config_for_saving(), "id2label": None})
    load_pretrained_weights(target, "facebook/mask2former-swin-tiny-ade-semantic", strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(target.eval()(x), converted(x))
    with caplog.at_level(logging.WARNING, logger="segaccel.models"):
        two = Segmentor.from_pretrained(
            "facebook/mask2former-swin-tiny-ade-semantic", id2label={0: "bg", 1: "x"}
        )
    assert two.num_classes == 2 and "decode_head.cls_embed.weight" in caplog.text
    assert two.decode_head.cls_embed.weight.shape == (3, 32)


@pytest.mark.parametrize("repo", ["mask2former_repo", "eomt_repo"])
def test_convert_checkpoint_script_writes_a_segaccel_repo(repo, request, tmp_path, offline_cache, capsys):
    theirs, folder = request.getfixturevalue(repo)
    cache_folder(offline_cache, "org/mask-classifier", folder)
    spec = importlib.util.spec_from_file_location(
        "convert_checkpoint", REPO_ROOT / "scripts" / "convert_checkpoint.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = script.main(["org/mask-classifier", str(tmp_path / "converted")])
    assert "reloaded logits differ by at most 0" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert "model_type" not in config and config["id2label"]["2"] == "sky"
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    reloaded = Segmentor.from_pretrained(out)
    with torch.no_grad():
        all_cls, _ = reloaded.decode_head(reloaded.extract_feat(x))
        expected = theirs(pixel_values=x).class_queries_logits
    torch.testing.assert_close(all_cls[-1], expected, rtol=0, atol=1e-4)
