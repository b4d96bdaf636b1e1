"""transformers' Mask2Former → segaccel: the same class and mask logits (1e-4) and semantic maps.

transformers is a test-only dependency; the models are tiny, random and built here (no download).
Inputs are non-square.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conversion_testing import randomised

from segaccel.convert.mask2former import (
    mask2former_config_from_transformers,
    mask2former_state_dict_from_transformers,
    preprocessing_from_image_processor,
)
from segaccel.models import Segmentor
from segaccel.structures import SegDataSample

transformers = pytest.importorskip("transformers")
pytest.importorskip("timm")

NUM_LABELS = 12


def tiny_resnet_config(**overrides) -> transformers.Mask2FormerConfig:
    backbone = transformers.ResNetConfig(
        depths=[1, 1, 1, 1],
        hidden_sizes=[32, 64, 96, 128],
        embedding_size=64,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    kwargs = dict(
        backbone_config=backbone,
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        encoder_feedforward_dim=48,
        dim_feedforward=48,
        encoder_layers=2,
        decoder_layers=4,
        num_attention_heads=4,
        num_queries=8,
        num_labels=NUM_LABELS,
        id2label={i: f"class_{i}" for i in range(NUM_LABELS)},
        label2id={f"class_{i}": i for i in range(NUM_LABELS)},
    )
    kwargs.update(overrides)
    return transformers.Mask2FormerConfig(**kwargs)


def converted(theirs: torch.nn.Module) -> Segmentor:
    config = theirs.config.to_dict()
    ours = Segmentor(**mask2former_config_from_transformers(config)).eval()
    ours.load_weights(mask2former_state_dict_from_transformers(theirs.state_dict(), config), strict=True)
    return ours


@pytest.fixture(scope="module")
def twins():
    """A random transformers Mask2Former and its conversion."""
    torch.manual_seed(0)
    theirs = randomised(transformers.Mask2FormerForUniversalSegmentation(tiny_resnet_config()))
    return theirs, converted(theirs)


@pytest.fixture(scope="module")
def sharp_twins():
    """As `twins`, with the decoder's final LayerNorm scaled up so the queries' classes and masks differ
    enough for a semantic map of several classes (random decoders give every query about the same
    prediction otherwise; the logits then reach ~1e3, so they are compared in `twins`)."""
    torch.manual_seed(1)
    theirs = randomised(transformers.Mask2FormerForUniversalSegmentation(tiny_resnet_config()), seed=4)
    with torch.no_grad():
        theirs.model.transformer_module.decoder.layernorm.weight.mul_(30)
    return theirs, converted(theirs)


def test_every_layer_logits_equal_transformers(twins):
    theirs, ours = twins
    x = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(1))  # non-square
    with torch.no_grad():
        out = theirs(pixel_values=x, output_auxiliary_logits=True)
        all_cls, all_masks = ours.decode_head(ours.extract_feat(x))
    assert all_masks[-1].shape == out.masks_queries_logits.shape == (2, 8, 24, 40)
    torch.testing.assert_close(all_cls[-1], out.class_queries_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(all_masks[-1], out.masks_queries_logits, atol=1e-4, rtol=0)
    for i, aux in enumerate(out.auxiliary_logits):  # deep supervision outputs too
        torch.testing.assert_close(all_cls[i], aux["class_queries_logits"], atol=1e-4, rtol=0)
        torch.testing.assert_close(all_masks[i], aux["masks_queries_logits"], atol=1e-4, rtol=0)


def smooth_images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Normalised images with image-like (low-frequency) content, so the maps have few, smooth regions."""
    coarse = torch.randn(n, 3, 4, 6, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def test_semantic_map_equals_post_process_semantic_segmentation(sharp_twins):
    """A 320x384 image padded to 384x384, as transformers' image processor pads a batch: its masks go
    to 384x384 in both pipelines (transformers always resizes them to 384x384; we to the padded input
    size, then drop the padding), so the maps agree up to float rounding."""
    theirs, ours = sharp_twins
    x = smooth_images(2, 320, 384, seed=2)
    padded = F.pad(x, (0, 0, 0, 64))
    meta = {"ori_shape": (320, 384), "img_shape": (320, 384), "pad_shape": (384, 384)}
    meta["padding_size"] = (0, 0, 0, 64)  # (left, right, top, bottom), as SegDataPreProcessor writes it
    processor = transformers.Mask2FormerImageProcessor()
    with torch.no_grad():
        out = theirs(pixel_values=padded)
        maps = processor.post_process_semantic_segmentation(out, target_sizes=[(384, 384)] * 2)
        preds = ours.predict(padded, [SegDataSample(metainfo=meta) for _ in range(2)])
    for theirs_map, pred in zip(maps, preds):
        assert pred.pred_sem_seg.data.shape == (1, 320, 384)
        agreement = (theirs_map[:320] == pred.pred_sem_seg.data[0]).float().mean().item()
        assert agreement >= 0.999, agreement
        _, areas = theirs_map[:320].unique(return_counts=True)
        assert (areas >= 0.01 * 320 * 384).sum() >= 2  # a map of several classes, not one everywhere


def test_semantic_map_of_an_unpadded_non_square_image(sharp_twins):
    """Unpadded 128x192: transformers resizes the masks to 384x384 (another aspect ratio) before the class
    sum, we to 128x192, so boundaries may move by a pixel; the maps still agree almost everywhere."""
    theirs, ours = sharp_twins
    x = smooth_images(2, 128, 192, seed=2)
    processor = transformers.Mask2FormerImageProcessor()
    with torch.no_grad():
        out = theirs(pixel_values=x)
        maps = processor.post_process_semantic_segmentation(out, target_sizes=[(128, 192)] * 2)
        preds = ours.predict(x)
    for theirs_map, pred in zip(maps, preds):
        agreement = (theirs_map == pred.pred_sem_seg.data[0]).float().mean().item()
        assert agreement >= 0.99, agreement


def test_every_weight_is_converted(twins):
    theirs, ours = twins
    converted = mask2former_state_dict_from_transformers(theirs.state_dict(), theirs.config.to_dict())
    assert set(converted) == set(ours.state_dict())
    # no loss weight; each of the 3 decoder layers: q/k/v weights and biases (6) → in_proj (2)
    assert len(converted) == len(theirs.state_dict()) - 1 - 3 * 4


def test_config_conversion():
    cfg = mask2former_config_from_transformers(tiny_resnet_config().to_dict())
    assert cfg["backbone"] == {
        "type": "TimmBackbone",
        "model_name": "resnet50",
        "pretrained": None,
        "out_indices": [1, 2, 3, 4],
        "model_kwargs": {"layers": [1, 1, 1, 1], "channels": [8, 16, 24, 32]},
    }
    head = cfg["decode_head"]
    assert head["in_channels"] == [32, 64, 96, 128] and head["num_classes"] == NUM_LABELS
    assert head["transformer_decoder"]["num_layers"] == 3  # decoder_layers counts the initial prediction
    assert head["loss_decode"]["num_points"] == 12544 and head["loss_decode"]["no_object_weight"] == 0.1
    assert cfg["id2label"]["3"] == "class_3"
    r50 = transformers.ResNetConfig(out_features=["stage1", "stage2", "stage3", "stage4"])
    full = mask2former_config_from_transformers(tiny_resnet_config(backbone_config=r50).to_dict())
    assert full["backbone"]["model_name"] == "resnet50" and "model_kwargs" not in full["backbone"]


def test_preprocessing_conversion():
    pre, pipeline = preprocessing_from_image_processor(
        {
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.25, 0.25, 0.25],
            "size": {"shortest_edge": 512, "longest_edge": 2048},
            "size_divisor": 32,
        },
        {},
    )
    assert pre["mean"] == [127.5] * 3 and pre["std"] == [63.75] * 3 and pre["size_divisor"] == 32
    assert pipeline == [{"type": "ResizeShortestEdge", "scale": 512, "max_size": 2048}]
    _, pipeline = preprocessing_from_image_processor({"size": {"height": 384, "width": 640}}, {})
    assert pipeline == [{"type": "Resize", "scale": [640, 384], "keep_ratio": False}]
    _, pipeline = preprocessing_from_image_processor({"size": 384}, {})
    assert pipeline == [{"type": "ResizeShortestEdge", "scale": 384, "max_size": None}]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pre_norm": True}, "pre_norm"),
        ({"activation_function": "gelu"}, "activation_function"),
        ({"common_stride": 8}, "common_stride"),
    ],
)
def test_unsupported_configs_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        mask2former_config_from_transformers(tiny_resnet_config(**overrides).to_dict())


def test_unsupported_resnets_are_refused():
    bad = transformers.ResNetConfig(embedding_size=32, out_features=["stage1", "stage2", "stage3", "stage4"])
    with pytest.raises(ValueError, match="embedding_size 32"):
        mask2former_config_from_transformers(tiny_resnet_config(backbone_config=bad).to_dict())
    stages = ["stage1", "stage2", "stage3", "stage4"]
    bad = transformers.ResNetConfig(downsample_in_bottleneck=True, out_features=stages)
    with pytest.raises(ValueError, match="downsample_in_bottleneck"):
        mask2former_config_from_transformers(tiny_resnet_config(backbone_config=bad).to_dict())


# --- Swin backbone (the Hub's Mask2Former checkpoints) ---------------------------------------------------
def tiny_swin_config() -> transformers.Mask2FormerConfig:
    """Window 2, so every stage map of a 96x160 input (24x40 ... 3x5) is larger than the window: the
    size at which transformers' Swin keeps its window and shift (see convert/transformers_swin.py)."""
    swin = transformers.SwinConfig(
        embed_dim=32,
        depths=[1, 2, 1, 1],
        num_heads=[2, 2, 4, 4],
        window_size=2,
        drop_path_rate=0.0,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return tiny_resnet_config(backbone_config=swin)


@pytest.fixture(scope="module")
def swin_twins():
    torch.manual_seed(0)
    theirs = randomised(transformers.Mask2FormerForUniversalSegmentation(tiny_swin_config()))
    return theirs, converted(theirs)


def test_swin_features_and_logits_equal_transformers(swin_twins):
    theirs, ours = swin_twins
    assert ours.config["backbone"]["type"] == "SwinTransformer"
    x = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = theirs(pixel_values=x, output_hidden_states=True)
        feats = ours.extract_feat(x)
        all_cls, all_masks = ours.decode_head(feats)
    for theirs_feat, our_feat in zip(out.encoder_hidden_states, feats):  # the stage norms applied
        torch.testing.assert_close(our_feat, theirs_feat, atol=1e-4, rtol=0)
    torch.testing.assert_close(all_cls[-1], out.class_queries_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(all_masks[-1], out.masks_queries_logits, atol=1e-4, rtol=0)


def test_swin_every_layer_equals_transformers_in_float64(swin_twins):
    """Every decoder layer's logits (deep supervision too) in float64: the conversion is exact, so the
    float32 differences (up to ~2e-4 on an intermediate layer's mask logits of magnitude ~17, 5e-5 on the
    last layer's) are rounding; in float64 they are ~1e-13."""
    import copy

    theirs, ours = (copy.deepcopy(m).double() for m in swin_twins)
    x = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        out = theirs(pixel_values=x, output_auxiliary_logits=True)
        all_cls, all_masks = ours.decode_head(ours.extract_feat(x))
    theirs_cls = [a["class_queries_logits"] for a in out.auxiliary_logits] + [out.class_queries_logits]
    theirs_masks = [a["masks_queries_logits"] for a in out.auxiliary_logits] + [out.masks_queries_logits]
    assert len(all_cls) == len(theirs_cls) == 4
    for ours_c, theirs_c, ours_m, theirs_m in zip(all_cls, theirs_cls, all_masks, theirs_masks):
        torch.testing.assert_close(ours_c, theirs_c, atol=1e-9, rtol=0)
        torch.testing.assert_close(ours_m, theirs_m, atol=1e-9, rtol=0)


def test_swin_checkpoint_names_as_saved(swin_twins, tmp_path):
    """transformers saves its 4.x names (attention.self.query, intermediate.dense, ...): read them too."""
    from safetensors.torch import load_file

    theirs, ours = swin_twins
    theirs.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert any(".attention.self.query." in k for k in saved)
    converted_saved = mask2former_state_dict_from_transformers(saved, theirs.config.to_dict())
    for key, value in ours.state_dict().items():
        assert torch.equal(converted_saved[key], value), key


def test_swin_relative_position_index_is_the_original():
    from segaccel.convert.transformers_swin import relative_position_index
    from segaccel.models.backbones.swin import SwinTransformer

    ours = SwinTransformer(embed_dims=16, depths=[1, 1], num_heads=[1, 1], strides=[4, 2], out_indices=[0, 1])
    index = ours.state_dict()["stages.0.blocks.0.attn.w_msa.relative_position_index"]
    assert torch.equal(relative_position_index(7), index)
