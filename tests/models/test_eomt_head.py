"""`EoMTHead`: queries joining a ViT `TimmBackbone`'s last blocks, masked attention and its annealing,
deep supervision, and the `Segmentor` around it (the head runs the backbone it is bound to)."""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint

from segaccel.models import Segmentor
from segaccel.models.heads.eomt_head import annealed_probability
from segaccel.structures import PixelData, SegDataSample

pytest.importorskip("timm")

NUM_CLASSES = 4


def tiny_backbone(**overrides) -> dict:
    cfg = {
        "type": "TimmBackbone",
        "model_name": "vit_small_patch14_reg4_dinov2",
        "out_indices": [-1],
        "final_norm": True,
        "model_kwargs": {"img_size": 64, "patch_size": 16, "embed_dim": 32, "depth": 4, "num_heads": 2},
    }
    cfg.update(overrides)
    return cfg


def tiny_head(**overrides) -> dict:
    cfg = {
        "type": "EoMTHead",
        "in_channels": 32,
        "num_classes": NUM_CLASSES,
        "num_queries": 5,
        "num_blocks": 2,
        "patch_size": 16,
        "loss_decode": {
            "type": "MaskClassificationLoss",
            "num_points": 256,
            "matcher": {"type": "HungarianMatcher", "num_points": 256},
        },
    }
    cfg.update(overrides)
    return cfg


def tiny_eomt(head: dict | None = None, backbone: dict | None = None) -> Segmentor:
    torch.manual_seed(0)
    return Segmentor(
        backbone=backbone or tiny_backbone(),
        decode_head=head or tiny_head(),
        data_preprocessor={"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]},
    )


def labelled_batch(seed: int) -> tuple[list[torch.Tensor], list[SegDataSample]]:
    """Two uint8 64x96 images with random labels, as the DataLoader gives them."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8, generator=g) for _ in range(2)]
    samples = [
        SegDataSample(
            gt_sem_seg=PixelData(torch.randint(0, NUM_CLASSES, (1, 64, 96), generator=g)),
            metainfo={"img_shape": (64, 96), "ori_shape": (64, 96)},
        )
        for _ in range(2)
    ]
    return images, samples


def test_predictions_before_each_joined_block_and_after_the_last():
    model = tiny_eomt().train()
    x = torch.randn(2, 3, 64, 96)  # non-square, 4x6 patches
    all_cls, all_masks = model.decode_head(model.extract_feat(x))
    assert len(all_cls) == len(all_masks) == 3  # before blocks 2 and 3, and after block 3
    for cls, masks in zip(all_cls, all_masks):
        assert cls.shape == (2, 5, NUM_CLASSES + 1)
        assert masks.shape == (2, 5, 16, 24)  # 2 upscale blocks: 4x the 4x6 grid
    assert model.extract_feat(x)[0] is x  # the head runs the backbone itself


def test_inference_without_masking_skips_the_intermediate_predictions():
    model = tiny_eomt().eval()
    model.decode_head.attn_mask_probs.zero_()  # annealed to none, as after training
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        all_cls, _ = model.decode_head([x])
        assert len(all_cls) == 1
        model.decode_head.attn_mask_probs.fill_(1.0)
        masked_cls, _ = model.decode_head([x])
    assert len(masked_cls) == 3
    assert not torch.allclose(masked_cls[-1], all_cls[-1])  # the masks change the attention


def test_attention_mask_follows_the_mask_logits():
    head = tiny_eomt().decode_head
    grid, prefix = (2, 3), 5  # class token + 4 registers
    tokens = torch.zeros(1, 5 + prefix + 6, 32)
    logits = torch.full((1, 5, 8, 12), -1.0)
    logits[0, 0, :4, :4] = 1.0  # query 0: the top-left 4x4 of the 8x12 masks (patch (0, 0) on the grid)
    mask = head._attn_mask(tokens, logits, torch.tensor(1.0), grid, prefix)[0, 0]
    assert mask.shape == (16, 16)
    assert mask[:5, :10].all() and mask[5:].all()  # queries see queries and prefix; the rest see all
    assert mask[0, 10:].tolist() == [True, False, False, False, False, False]
    assert not mask[1:5, 10:].any()
    torch.manual_seed(0)
    freed = head._attn_mask(tokens, logits, torch.tensor(0.0), grid, prefix)
    assert freed.all()  # probability 0: every query is freed of its mask


def test_annealing_schedule_by_hand():
    assert annealed_probability(5, 10, 20, 0.9) == 1.0
    assert annealed_probability(20, 10, 20, 0.9) == 0.0
    assert annealed_probability(15, 10, 20, 0.9) == pytest.approx(0.5**0.9)
    annealed = tiny_head(mask_annealing_start_steps=[10, 20], mask_annealing_end_steps=[20, 30])
    head = tiny_eomt(annealed).decode_head
    head.set_train_progress(15, 100)
    assert head.attn_mask_probs.tolist() == pytest.approx([0.5**0.9, 1.0])
    head.set_train_progress(30, 100)
    assert head.attn_mask_probs.tolist() == [0.0, 0.0]
    frac = tiny_eomt(tiny_head(mask_annealing_start_steps=[0.25, 0.5], mask_annealing_end_steps=[0.5, 0.75]))
    frac.set_train_progress(40, 80)  # through the Segmentor, as the train loop calls it
    assert frac.decode_head.attn_mask_probs.tolist() == [0.0, 1.0]


def test_losses_and_gradients_reach_the_backbone_and_queries():
    model = tiny_eomt().train()
    images, samples = labelled_batch(seed=0)
    data = model.data_preprocessor({"inputs": images, "data_samples": samples}, training=True)
    losses = model(data["inputs"], data["data_samples"], mode="loss")
    names = {f"decode.{p}{k}" for p in ("", "d0.", "d1.") for k in ("loss_cls", "loss_mask", "loss_dice")}
    assert set(losses) == names
    sum(losses.values()).backward()
    assert model.decode_head.q.weight.grad.abs().sum() > 0
    assert model.backbone.timm_model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_segmentor_predict_modes_and_tensor_mode():
    model = tiny_eomt().eval()
    x = torch.randn(1, 3, 70, 100)  # not a multiple of the patch: padded by the backbone's rule
    with torch.no_grad():
        whole = model.predict(x)[0]
        model.test_cfg = {"mode": "slide", "crop_size": [64, 64], "stride": [48, 48]}
        slide = model.predict(x)[0]
        logits = model(x, mode="tensor")
    assert whole.seg_logits.data.shape == slide.seg_logits.data.shape == (NUM_CLASSES, 70, 100)
    assert logits.shape == (1, NUM_CLASSES, 20, 28)  # 5x7 patches, 4x upscaled, no resize


def test_binding_errors():
    with pytest.raises(ValueError, match="ViT TimmBackbone"):
        tiny_eomt(backbone={"type": "TimmBackbone", "model_name": "resnet18", "out_indices": [1, 2, 3, 4]})
    with pytest.raises(ValueError, match="final_norm"):
        tiny_eomt(backbone=tiny_backbone(out_indices=[1], final_norm=False))
    with pytest.raises(ValueError, match="in_channels 48"):
        tiny_eomt(tiny_head(in_channels=48))
    with pytest.raises(ValueError, match="one entry per block"):
        tiny_eomt(tiny_head(mask_annealing_start_steps=[1], mask_annealing_end_steps=[2]))


def test_config_json_round_trip(tmp_path):
    annealed = tiny_head(mask_annealing_start_steps=[10, 20], mask_annealing_end_steps=[20, 30])
    model = tiny_eomt(annealed).eval()
    model.decode_head.attn_mask_probs.fill_(0.0)
    model.save_pretrained(tmp_path)
    loaded = Segmentor.from_pretrained(tmp_path)
    assert loaded.decode_head.attn_mask_probs.tolist() == [0.0, 0.0]  # the annealing state travels
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x)[0].seg_logits.data, loaded.predict(x)[0].seg_logits.data)


def test_with_cp_checkpoints_every_block_with_the_same_losses_and_gradients(checkpoint_calls):
    """`with_cp: true` on the backbone: the head runs all ViT blocks (its joined ones included) under
    activation checkpointing, with the plain model's losses and gradients (same seed: the random
    attention-mask draws, points and drop path agree)."""
    kwargs = {**tiny_backbone()["model_kwargs"], "drop_path_rate": 0.2}
    images, samples = labelled_batch(seed=1)
    results = []
    for with_cp in (False, True):
        model = tiny_eomt(backbone=tiny_backbone(with_cp=with_cp, model_kwargs=kwargs)).train()
        model.decode_head.attn_mask_probs.fill_(0.5)  # random per-query masking: the RNG must replay
        data = model.data_preprocessor({"inputs": images, "data_samples": samples}, training=True)
        torch.manual_seed(7)
        losses = model(data["inputs"], data["data_samples"], mode="loss")
        sum(losses.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append(({k: v.item() for k, v in losses.items()}, grads))
    assert len(checkpoint_calls) == 4  # the 4 blocks of the checkpointed model, none of the plain one
    (plain_losses, plain_grads), (cp_losses, cp_grads) = results
    assert plain_losses.keys() == cp_losses.keys()
    for k, v in plain_losses.items():
        assert cp_losses[k] == pytest.approx(v, abs=1e-6), k
    assert plain_grads.keys() == cp_grads.keys() and len(plain_grads) > 20
    for n, grad in plain_grads.items():
        torch.testing.assert_close(cp_grads[n], grad, rtol=1e-5, atol=1e-6, msg=n)
