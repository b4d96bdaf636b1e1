"""The Mask2Former (configs/mask2former/) and EoMT (configs/eomt/) configs: each builds, computes its
losses and predicts on a 2x3x97x131 batch, and carries its original's recipe (MMSegmentation's for
Mask2Former, EoMT's for EoMT)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import segaccel.engine  # noqa: F401  (registers the schedulers)
import segaccel.models  # noqa: F401
from segaccel.config import load_config
from segaccel.engine.optim import build_optimizer
from segaccel.engine.schedulers import build_lr_scheduler
from segaccel.registry import MODELS
from segaccel.structures import PixelData, SegDataSample

pytest.importorskip("timm")

ROOT = Path(__file__).resolve().parents[2]


def configs_in(folder: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs" / folder).glob("*.yaml"))


MASK2FORMER = configs_in("mask2former")
EOMT = configs_in("eomt")


def test_the_configs_asked_for_are_there():
    assert MASK2FORMER == [
        "mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.yaml",
        "mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.yaml",
        "mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.yaml",
        "mask2former/mask2former_swin-t_8xb2-90k_cityscapes-512x1024.yaml",
    ]
    assert EOMT == [f"eomt/eomt_vit-{s}-dinov2_4xb4-39k_ade20k-512x512.yaml" for s in ("b", "l", "s")]


def load(name: str) -> dict:
    try:
        return load_config(ROOT / "configs" / name)
    except FileNotFoundError as exc:  # a dataset recipe missing from this checkout
        pytest.skip(f"{name}: {exc}")


@pytest.mark.parametrize("name", MASK2FORMER + EOMT)
def test_config_builds_computes_losses_and_predicts(name):
    cfg = load(name)
    model_cfg = cfg["model"]
    model_cfg["backbone"]["pretrained"] = None  # never download in tests
    model_cfg["data_preprocessor"]["size"] = None  # no padding of the batch to the crop (CPU time)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg, key="model")
    num_classes = 150 if "ade20k" in name else 19
    assert model.num_classes == num_classes
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 97, 131), dtype=torch.uint8, generator=g) for _ in range(2)]
    samples = [
        SegDataSample(
            gt_sem_seg=PixelData(torch.randint(0, num_classes, (1, 97, 131), generator=g)),
            metainfo={"img_shape": (97, 131), "ori_shape": (97, 131)},
        )
        for _ in range(2)
    ]
    model.train()
    data = model.data_preprocessor({"inputs": images, "data_samples": samples}, training=True)
    with torch.no_grad():
        losses = model(data["inputs"], data["data_samples"], mode="loss")
    assert {"decode.loss_cls", "decode.loss_mask", "decode.loss_dice", "decode.d0.loss_cls"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    model.test_cfg = {"mode": "whole"}  # (slide windows of 512 over a 97x131 image: one padded window)
    batch = model.data_preprocessor({"inputs": images[:1], "data_samples": [samples[0]]}, training=False)
    with torch.no_grad():
        (pred,) = model(batch["inputs"], batch["data_samples"], mode="predict")
    assert pred.seg_logits.data.shape == (num_classes, 97, 131)
    optimizer = build_optimizer(model, cfg["optim_wrapper"])
    assert type(optimizer).__name__ == "AdamW"


@pytest.mark.parametrize("name", MASK2FORMER)
def test_mask2former_recipe_is_mmsegmentations(name):
    cfg = load(name)
    iters = 160000 if "ade20k" in name else 90000
    opt = cfg["optim_wrapper"]
    assert opt["optimizer"] == {
        "type": "AdamW", "lr": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.05
    }
    assert opt["clip_grad"] == {"max_norm": 0.01, "norm_type": 2}
    keys = opt["paramwise_cfg"]["custom_keys"]
    assert keys["backbone"] == {"lr_mult": 0.1, "decay_mult": 1.0}
    embeddings = {"lr_mult": 1.0, "decay_mult": 0.0}
    assert keys["query_embed"] == keys["query_feat"] == keys["level_embed"] == embeddings
    assert opt["paramwise_cfg"]["norm_decay_mult"] == 0.0
    poly = {"type": "PolyLR", "eta_min": 0.0, "power": 0.9, "begin": 0, "end": "max_iters"}
    assert cfg["param_scheduler"] == [poly]
    assert cfg["train_cfg"]["max_iters"] == iters and cfg["train_dataloader"]["batch_size"] == 2
    head = cfg["model"]["decode_head"]
    assert head["num_queries"] == 100 and head["transformer_decoder"]["num_layers"] == 9
    loss = head["loss_decode"]
    assert loss["num_points"] == 12544 and loss["importance_sample_ratio"] == 0.75
    crop = [512, 512] if "ade20k" in name else [512, 1024]
    assert cfg["model"]["data_preprocessor"]["size"] == crop
    resize = cfg["train_dataloader"]["dataset"]["pipeline"][0]
    short = 512 if "ade20k" in name else 1024
    assert [s[1] for s in resize["scales"]] == [int(short * x * 0.1) for x in range(5, 21)]


def test_swin_t_backbone_lr_and_decay_groups():
    """Swin-T: every backbone tensor at lr x0.1; its norms, position tables and the query/level
    embeddings without weight decay; everything else of the head at lr x1 with decay (MMSegmentation's)."""
    cfg = load("mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.yaml")
    cfg["model"]["backbone"]["pretrained"] = None
    model = MODELS.build(cfg["model"], key="model")
    optimizer = build_optimizer(model, cfg["optim_wrapper"])
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        group = by_param[id(param)]
        if name.startswith("backbone."):
            assert group["lr_mult"] == 0.1, name
            no_decay = ".norm" in name or name.startswith("backbone.norm") or "relative_position" in name
            assert group["decay_mult"] == (0.0 if no_decay else 1.0), name
        else:
            assert group["lr_mult"] == 1.0, name


@pytest.mark.parametrize("name", EOMT)
def test_eomt_recipe(name):
    cfg = load(name)
    large = "vit-l" in name
    head = cfg["model"]["decode_head"]
    assert head["num_queries"] == 100 and head["num_blocks"] == (4 if large else 3)
    ends = head["mask_annealing_end_steps"]
    assert head["mask_annealing_start_steps"][0] == 6520 and ends[-1] == 32600  # 1/6 .. 5/6 of 39120
    assert cfg["train_cfg"]["max_iters"] == 39120
    assert cfg["optim_wrapper"]["optimizer"] == {"type": "AdamW", "lr": 1e-4, "weight_decay": 0.05}
    assert cfg["optim_wrapper"]["paramwise_cfg"]["decay_rate"] == 0.8
    warmup = {"type": "TwoStageWarmupPolyLR", "warmup_iters": [500, 1000], "power": 0.9}
    assert cfg["param_scheduler"] == [warmup]
    assert cfg["model"]["test_cfg"] == {"mode": "slide", "crop_size": [512, 512], "stride": [512, 512]}


def test_eomt_small_optimizer_and_schedule():
    """ViT-S: block i at lr 0.8^(11 - i), the head at 1; the head warms up over 500 steps while the
    backbone stays at 0, the backbone then over 1000 (EoMT's TwoStageWarmupPolySchedule)."""
    cfg = load("eomt/eomt_vit-s-dinov2_4xb4-39k_ade20k-512x512.yaml")
    cfg["model"]["backbone"]["pretrained"] = None
    model = MODELS.build(cfg["model"], key="model")
    optimizer = build_optimizer(model, cfg["optim_wrapper"])
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    block3 = by_param[id(params["backbone.timm_model.blocks.3.attn.qkv.weight"])]
    assert block3["lr_mult"] == pytest.approx(0.8**8) and block3["backbone"] is True
    query = by_param[id(params["decode_head.q.weight"])]
    assert query["lr_mult"] == 1.0 and query["backbone"] is False
    scheduler = build_lr_scheduler(optimizer, cfg["param_scheduler"], cfg["train_cfg"]["max_iters"])
    for _ in range(250):
        scheduler.step()
    assert query["lr"] == pytest.approx(1e-4 * 250 / 500) and block3["lr"] == 0.0
    for _ in range(500):
        scheduler.step()  # step 750: the backbone 250 steps into its warm-up
    assert block3["lr"] == pytest.approx(1e-4 * 0.8**8 * 250 / 1000)
    assert query["lr"] == pytest.approx(1e-4 * (1 - 250 / (39120 - 500)) ** 0.9)
