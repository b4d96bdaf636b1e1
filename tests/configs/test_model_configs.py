"""Every model config of configs/<method>/: it builds, computes losses and predicts on a small random
batch, and carries its MMSegmentation original's optimizer and schedule. Configs on timm backbones
are skipped where timm is not installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml

import segaccel.models  # noqa: F401  (registers the model parts)
from segaccel.config import load_config, merge
from segaccel.engine.optim import build_optimizer
from segaccel.registry import MODELS
from segaccel.structures import PixelData, SegDataSample

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [
    *(
        f"segformer/segformer_mit-{b}_8xb2-160k_ade20k-512x512.yaml"
        for b in ("b0", "b1", "b2", "b3", "b4", "b5")
    ),
    "segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.yaml",
    "fcn/fcn_r50-d8_4xb2-80k_cityscapes-512x1024.yaml",
    "pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.yaml",
    "deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.yaml",
    "deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.yaml",
    "upernet/upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.yaml",
    "upernet/upernet_swin-t_8xb2-160k_ade20k-512x512.yaml",
]
FOUNDATION_FOLDERS = ("dinov2", "dinov3", "dpt", "vit")  # tested in test_foundation_configs.py
MASK_CLASSIFICATION_FOLDERS = ("mask2former", "eomt")  # tested in test_mask_classification_configs.py
HAS_TIMM = (
    importlib.util.find_spec("timm") is not None and importlib.util.find_spec("torchvision") is not None
)


def load(name: str) -> dict:
    """The resolved config; dataset recipes that are not there are left out (the model part needs none)."""
    path = ROOT / "configs" / name
    try:
        return load_config(path)
    except FileNotFoundError:
        return _load_without_missing(path)


def _load_without_missing(path: Path) -> dict:
    raw = yaml.safe_load(path.read_text()) or {}
    cfg: dict = {}
    for base in raw.pop("_base_", []):
        base_path = path.parent / base
        if base_path.is_file():
            cfg = merge(cfg, _load_without_missing(base_path))
        else:
            assert "/datasets/" in base, f"{path}: missing _base_ {base}"
    return merge(cfg, raw)


def test_the_configs_listed_are_all_there_is():
    found = sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").glob("*/*.yaml"))
    found = [f for f in found if not f.startswith("_base_/")]
    found = [f for f in found if f.split("/")[0] not in FOUNDATION_FOLDERS]  # test_foundation_configs.py
    found = [f for f in found if f.split("/")[0] not in MASK_CLASSIFICATION_FOLDERS]
    assert sorted(CONFIGS) == found


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_computes_losses_and_predicts(name):
    cfg = load(name)
    model_cfg = cfg["model"]
    if model_cfg["backbone"]["type"] == "TimmBackbone" and not HAS_TIMM:
        pytest.skip("timm (the segaccel[timm] extra) is not installed")
    model_cfg["backbone"]["pretrained"] = None  # never download in tests
    # training batches are padded to the crop size (data_preprocessor.size, tested in
    # tests/models/test_data_preprocessor.py); these small random batches skip that, for CPU time
    model_cfg["data_preprocessor"].pop("size", None)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg, key="model")
    num_classes = model.num_classes
    assert num_classes == (150 if "ade20k" in name else 19)
    assert model.config["backbone"]["pretrained"] is None

    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 32, 64), dtype=torch.uint8, generator=g) for _ in range(2)]
    samples = [
        SegDataSample(gt_sem_seg=PixelData(torch.randint(0, num_classes, (1, 32, 64), generator=g)))
        for _ in range(2)
    ]
    data = model.data_preprocessor({"inputs": images, "data_samples": samples}, training=True)
    model.train()
    losses = model(data["inputs"], data["data_samples"], mode="loss")
    assert "decode.loss_ce" in losses and torch.isfinite(losses["decode.loss_ce"])
    if model_cfg.get("auxiliary_head"):
        assert "aux.loss_ce" in losses
    if sum(p.numel() for p in model.parameters()) < 30e6:  # backward on the small ones (CPU time)
        sum(v for k, v in losses.items() if "loss" in k).backward()

    model.eval()
    meta = {"ori_shape": (32, 64), "img_shape": (32, 64)}
    batch = model.data_preprocessor(
        {"inputs": images[:1], "data_samples": [SegDataSample(metainfo=meta)]}, training=False
    )
    with torch.no_grad():
        (pred,) = model(batch["inputs"], batch["data_samples"], mode="predict")
    assert pred.seg_logits.data.shape == (num_classes, 32, 64) and pred.pred_sem_seg.data.shape == (1, 32, 64)

    optimizer = build_optimizer(model, cfg["optim_wrapper"])
    assert type(optimizer).__name__ == cfg["optim_wrapper"]["optimizer"]["type"]


@pytest.mark.parametrize("name", [c for c in CONFIGS if c.startswith("segformer/")])
def test_segformer_schedule_and_optimizer_are_mmsegmentations(name):
    cfg = load(name)
    opt = cfg["optim_wrapper"]
    assert opt["optimizer"] == {"type": "AdamW", "lr": 6e-5, "betas": [0.9, 0.999], "weight_decay": 0.01}
    assert opt["paramwise_cfg"]["custom_keys"] == {
        "pos_block": {"decay_mult": 0.0},
        "norm": {"decay_mult": 0.0},
        "head": {"lr_mult": 10.0},
    }
    assert cfg["param_scheduler"] == [
        {"type": "LinearLR", "start_factor": 1e-6, "begin": 0, "end": 1500},
        {"type": "PolyLR", "eta_min": 0.0, "power": 1.0, "begin": 1500, "end": "max_iters"},
    ]
    assert cfg["train_cfg"]["max_iters"] == 160000
    batch = 1 if "cityscapes" in name else 2
    assert cfg["train_dataloader"]["batch_size"] == batch


@pytest.mark.parametrize("name", [c for c in CONFIGS if "_r50-d8_" in c])
def test_resnet_configs_use_the_80k_sgd_schedule(name):
    cfg = load(name)
    assert cfg["optim_wrapper"]["optimizer"] == {
        "type": "SGD",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0005,
    }
    assert cfg["param_scheduler"] == [
        {"type": "PolyLR", "eta_min": 1e-4, "power": 0.9, "begin": 0, "end": "max_iters"}
    ]
    backbone = cfg["model"]["backbone"]  # MMSegmentation's ResNetV1c, output stride 8
    assert backbone["type"] == "ResNetV1c" and backbone["depth"] == 50 and backbone["contract_dilation"]
    assert backbone["strides"] == [1, 2, 1, 1] and backbone["dilations"] == [1, 1, 2, 4]
    assert cfg["model"]["data_preprocessor"]["size"] == [512, 1024]  # the crop size, as MMSegmentation


def test_get_flops_prints_parameters_and_flops(capsys, script_module):
    get_flops = script_module("get_flops")
    row = get_flops.main([str(ROOT / "configs" / CONFIGS[0]), "--shape", "64", "64"])
    out = capsys.readouterr().out
    assert "parameters:  3.75 M" in out and "FLOPs:" in out
    assert row["GFLOPs"] > 0 and row["params_M"] == pytest.approx(3.75, abs=0.01)
    assert get_flops.default_shape("x_cityscapes-512x1024.yaml") == (512, 1024)
