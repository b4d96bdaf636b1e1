"""transformers' EoMT → segaccel: the same class and mask logits (1e-4), annealed masking included, and
the same semantic maps of a non-square image split into windows.

transformers' `EomtForUniversalSegmentation` takes only its square `image_size`; its semantic pipeline
splits a non-square image into such windows (`EomtImageProcessor(do_split_image=True)`), which is our
slide inference. transformers is a test-only dependency; the models are tiny, random and built here.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conversion_testing import randomised

from segaccel.convert.eomt import (
    eomt_config_from_transformers,
    eomt_state_dict_from_transformers,
    is_transformers_eomt,
)
from segaccel.models import Segmentor
from segaccel.structures import SegDataSample

transformers = pytest.importorskip("transformers")
pytest.importorskip("timm")

NUM_LABELS = 6


def tiny_config(**overrides) -> transformers.EomtConfig:
    kwargs = dict(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        image_size=64,
        patch_size=16,
        num_blocks=2,
        num_queries=6,
        num_labels=NUM_LABELS,
        id2label={i: f"class_{i}" for i in range(NUM_LABELS)},
        label2id={f"class_{i}": i for i in range(NUM_LABELS)},
    )
    kwargs.update(overrides)
    return transformers.EomtConfig(**kwargs)


def converted(theirs: torch.nn.Module, preprocessor: dict | None = None) -> Segmentor:
    ours = Segmentor(**eomt_config_from_transformers(theirs.config.to_dict(), preprocessor)).eval()
    ours.load_weights(eomt_state_dict_from_transformers(theirs.state_dict()), strict=True)
    return ours


@pytest.fixture(scope="module")
def twins():
    torch.manual_seed(0)
    theirs = randomised(transformers.EomtForUniversalSegmentation(tiny_config()))
    return theirs, converted(theirs)


def test_logits_equal_transformers(twins):
    theirs, ours = twins
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = theirs(pixel_values=x)
        all_cls, all_masks = ours.decode_head(ours.extract_feat(x))
    assert all_masks[-1].shape == out.masks_queries_logits.shape == (2, 6, 16, 16)
    torch.testing.assert_close(all_cls[-1], out.class_queries_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(all_masks[-1], out.masks_queries_logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("probs", [(1.0, 1.0), (0.6, 0.3), (0.0, 0.0)])
def test_annealed_masking_equals_transformers_in_training(twins, probs):
    """Training mode, with masking probabilities part-way annealed: the same random queries are freed
    of their masks (the same draws in the same order), so the logits still agree."""
    theirs, ours = twins
    theirs.attn_mask_probs.copy_(torch.tensor(probs))
    ours.decode_head.attn_mask_probs.copy_(torch.tensor(probs))
    theirs.train(), ours.train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    try:
        with torch.no_grad():
            torch.manual_seed(7)
            out = theirs(pixel_values=x)
            torch.manual_seed(7)
            all_cls, all_masks = ours.decode_head([x])
    finally:
        theirs.eval(), ours.eval()
        theirs.attn_mask_probs.fill_(1.0)
        ours.decode_head.attn_mask_probs.fill_(1.0)
    assert len(all_cls) == 3  # before each of the 2 joined blocks, and after the last
    torch.testing.assert_close(all_cls[-1], out.class_queries_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(all_masks[-1], out.masks_queries_logits, atol=1e-4, rtol=0)


def windowed(theirs, processor):
    """A 64x112 image through transformers' pipeline (two 64x64 windows, at 0 and 48) and ours."""
    ours = converted(theirs, processor.to_dict())
    assert ours.test_cfg == {"mode": "slide", "crop_size": [64, 64], "stride": [64, 64]}
    g = torch.Generator().manual_seed(3)
    coarse = torch.randint(0, 256, (1, 3, 4, 7), generator=g).float()
    image = F.interpolate(coarse, size=(64, 112), mode="bilinear")[0].round().clamp(0, 255).to(torch.uint8)
    encoded = processor(images=[image], return_tensors="pt")
    assert [o.tolist() for o in encoded["patch_offsets"]] == [[0, 0, 64], [0, 48, 112]]
    meta = {"ori_shape": (64, 112), "img_shape": (64, 112)}
    data = ours.data_preprocessor({"inputs": [image], "data_samples": [SegDataSample(metainfo=meta)]})
    with torch.no_grad():
        out = theirs(pixel_values=encoded["pixel_values"], patch_offsets=encoded["patch_offsets"])
        windows = torch.cat([data["inputs"][..., :64], data["inputs"][..., 48:]])
        all_cls, all_masks = ours.decode_head([windows])
        pred = ours.predict(data["inputs"], data["data_samples"])[0]
    return out, all_cls, all_masks, pred


def split_processor():
    size = {"shortest_edge": 64, "longest_edge": None}
    return transformers.EomtImageProcessor(size=size, do_split_image=True)


def test_non_square_image_windows_logits(twins):
    """Each window of a non-square image (our slide windows = transformers' split) gives the same logits."""
    theirs, _ = twins
    out, all_cls, all_masks, _ = windowed(theirs, split_processor())
    torch.testing.assert_close(all_cls[-1], out.class_queries_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(all_masks[-1], out.masks_queries_logits, atol=1e-4, rtol=0)


def test_non_square_image_semantic_map(twins):
    """The merged windows: our slide inference's map equals `post_process_semantic_segmentation`'s."""
    theirs, _ = twins
    processor = split_processor()
    with torch.no_grad():  # sharper queries, so the map has several classes
        theirs.layernorm.weight.mul_(10)
    try:
        out, _, _, pred = windowed(theirs, processor)
    finally:
        with torch.no_grad():
            theirs.layernorm.weight.div_(10)
    semantic = processor.post_process_semantic_segmentation(out, target_sizes=[(64, 112)])[0]
    agreement = (semantic == pred.pred_sem_seg.data[0]).float().mean().item()
    assert agreement >= 0.999, agreement
    _, areas = semantic.unique(return_counts=True)
    assert (areas >= 0.01 * semantic.numel()).sum() >= 2  # not one class everywhere


def test_every_weight_is_converted(twins):
    theirs, ours = twins
    converted_state = eomt_state_dict_from_transformers(theirs.state_dict())
    assert set(converted_state) == set(ours.state_dict())
    # no loss weight; each of the 4 layers' q/k/v weights and biases (6) become one qkv (2)
    assert len(converted_state) == len(theirs.state_dict()) - 1 - 4 * 4


def test_config_conversion():
    assert is_transformers_eomt({"model_type": "eomt"}) and not is_transformers_eomt({"model_type": "vit"})
    cfg = eomt_config_from_transformers(tiny_config().to_dict())
    assert cfg["backbone"]["model_kwargs"] == {
        "img_size": 64,
        "patch_size": 16,
        "embed_dim": 32,
        "depth": 4,
        "num_heads": 2,
    }
    assert cfg["backbone"]["out_indices"] == [3] and cfg["backbone"]["final_norm"] is True
    assert cfg["decode_head"]["num_blocks"] == 2 and cfg["decode_head"]["num_queries"] == 6
    large_config = tiny_config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, image_size=512)
    large = eomt_config_from_transformers(large_config.to_dict())
    assert large["backbone"]["model_name"] == "vit_large_patch14_reg4_dinov2"
    assert large["backbone"]["model_kwargs"] == {"img_size": 512, "patch_size": 16}
    with pytest.raises(ValueError, match="use_swiglu_ffn"):
        eomt_config_from_transformers(tiny_config(use_swiglu_ffn=True).to_dict())
