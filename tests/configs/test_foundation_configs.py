"""The foundation-backbone configs (configs/dinov2, dinov3, dpt, vit): each builds (no download), runs
`loss` and `predict` on a 2x3x97x131 batch, builds its optimizer (frozen parameters in no group, the
groups logged) and carries its original recipe."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")

import segaccel.models  # noqa: E402,F401  (registers the model parts)
from segaccel.config import load_config  # noqa: E402
from segaccel.engine.optim import build_optimizer  # noqa: E402
from segaccel.registry import MODELS  # noqa: E402
from segaccel.structures import PixelData, SegDataSample  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FOUNDATION_CONFIGS = [
    "dinov2/dinov2_vit-s14_linear_8xb2-40k_ade20k-512x512.yaml",
    "dinov2/dinov2_vit-b14_linear_8xb2-40k_ade20k-512x512.yaml",
    "dinov2/dinov2_vit-s14_ms_8xb2-40k_ade20k-640x640.yaml",
    "dinov2/dinov2_vit-b14_ms_8xb2-40k_ade20k-640x640.yaml",
    "dinov3/dinov3_vit-s16_linear_8xb2-40k_ade20k-512x512.yaml",
    "dinov3/dinov3_convnext-t_upernet_8xb2-amp-160k_ade20k-512x512.yaml",
    "dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.yaml",
    "vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.yaml",
]
FROZEN = {c for c in FOUNDATION_CONFIGS if "linear" in c or "_ms_" in c}


def test_every_config_of_these_folders_is_listed():
    found = {
        str(p.relative_to(ROOT / "configs"))
        for folder in ("dinov2", "dinov3", "dpt", "vit")
        for p in (ROOT / "configs" / folder).glob("*.yaml")
    }
    assert found == set(FOUNDATION_CONFIGS)


def build(name: str, small: bool = False) -> tuple[dict, torch.nn.Module]:
    """The config's model, random init; `small`: trained at the batch's own size and slid with
    smaller windows (the recipes' 512/640 crops cost minutes on a shared CPU, and test no more)."""
    cfg = load_config(ROOT / "configs" / name)
    model_cfg = {**cfg["model"], "backbone": {**cfg["model"]["backbone"], "pretrained": None}}
    if small:
        preprocessor = {**model_cfg["data_preprocessor"], "size": None, "size_divisor": None}
        model_cfg["data_preprocessor"] = preprocessor
        if model_cfg["test_cfg"]["mode"] == "slide":
            model_cfg["test_cfg"] = {"mode": "slide", "crop_size": [64, 96], "stride": [48, 64]}
    torch.manual_seed(0)
    return cfg, MODELS.build(model_cfg, key="model")


@pytest.mark.parametrize("name", FOUNDATION_CONFIGS)
def test_config_builds_runs_loss_and_predict_and_builds_its_optimizer(name, caplog):
    cfg, model = build(name, small=True)
    assert model.num_classes == 150 and model.config["backbone"]["pretrained"] is None
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 97, 131), dtype=torch.uint8, generator=g) for _ in range(2)]
    labels = [torch.randint(0, 150, (1, 97, 131), generator=g) for _ in range(2)]
    labels[1][0, :10] = 255  # some ignored pixels
    samples = [SegDataSample(gt_sem_seg=PixelData(label)) for label in labels]
    data = model.data_preprocessor({"inputs": images, "data_samples": samples}, training=True)
    model.train()
    losses = model(data["inputs"], data["data_samples"], mode="loss")
    assert torch.isfinite(losses["decode.loss_ce"]) and losses["decode.loss_ce"] > 0
    assert ("aux.loss_ce" in losses) == (model.auxiliary_head is not None)

    model.eval()
    metas = [{"ori_shape": (97, 131), "img_shape": (97, 131)} for _ in range(2)]
    batch = model.data_preprocessor(
        {"inputs": images, "data_samples": [SegDataSample(metainfo=m) for m in metas]}, training=False
    )
    with torch.no_grad():
        preds = model(batch["inputs"], batch["data_samples"], mode="predict")
    assert [tuple(p.seg_logits.data.shape) for p in preds] == [(150, 97, 131)] * 2
    assert all(p.pred_sem_seg.data.shape == (1, 97, 131) for p in preds)

    with caplog.at_level(logging.INFO, logger="segaccel"):
        optimizer = build_optimizer(model, cfg["optim_wrapper"])
    assert type(optimizer).__name__ == cfg["optim_wrapper"]["optimizer"]["type"]
    in_groups = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert in_groups == trainable
    backbone = {id(p) for p in model.backbone.parameters()}
    if name in FROZEN:
        assert not backbone & in_groups and not model.backbone.timm_model.training  # frozen and eval
    else:
        assert backbone <= in_groups
    assert f"optimizer param groups ({len(optimizer.param_groups)};" in caplog.text


def test_dinov2_recipes_are_dinov2s():
    linear = load_config(ROOT / "configs" / FOUNDATION_CONFIGS[0])
    assert linear["optim_wrapper"]["optimizer"] == {
        "type": "AdamW",
        "lr": 1e-3,
        "betas": [0.9, 0.999],
        "weight_decay": 1e-4,
    }
    assert linear["param_scheduler"] == [
        {"type": "LinearLR", "start_factor": 1e-6, "begin": 0, "end": 1500},
        {"type": "PolyLR", "eta_min": 0.0, "power": 1.0, "begin": 0, "end": "max_iters"},
    ]
    assert linear["train_cfg"]["max_iters"] == 40000 and linear["train_dataloader"]["batch_size"] == 2
    backbone, head = linear["model"]["backbone"], linear["model"]["decode_head"]
    assert backbone["out_indices"] == [8, 9, 10, 11] and backbone["final_norm"] and backbone["frozen"]
    assert backbone["patch_padding"] == "center" and not backbone.get("with_cls_token")
    assert (head["type"], head["in_index"], head["channels"]) == ("BNHead", [3], 384)
    assert head["dropout_ratio"] == 0
    assert linear["model"]["test_cfg"] == {"mode": "slide", "crop_size": [512, 512], "stride": [341, 341]}
    ms = load_config(ROOT / "configs" / FOUNDATION_CONFIGS[3])
    assert ms["model"]["decode_head"]["in_index"] == [0, 1, 2, 3]
    assert ms["model"]["decode_head"]["channels"] == 3072
    assert ms["model"]["test_cfg"] == {"mode": "slide", "crop_size": [640, 640], "stride": [320, 320]}
    assert ms["train_dataloader"]["dataset"]["pipeline"][0]["ratio_range"] == [1.0, 3.0]
    assert ms["optim_wrapper"] == linear["optim_wrapper"]
    assert ms["param_scheduler"] == linear["param_scheduler"]


def test_dpt_and_vit_recipes_are_mmsegmentations():
    for name, iters in ((FOUNDATION_CONFIGS[6], 160000), (FOUNDATION_CONFIGS[7], 80000)):
        cfg = load_config(ROOT / "configs" / name)
        assert cfg["optim_wrapper"]["optimizer"] == {
            "type": "AdamW",
            "lr": 6e-5,
            "betas": [0.9, 0.999],
            "weight_decay": 0.01,
        }
        assert cfg["optim_wrapper"]["paramwise_cfg"]["custom_keys"] == {
            "pos_embed": {"decay_mult": 0.0},
            "cls_token": {"decay_mult": 0.0},
            "norm": {"decay_mult": 0.0},
        }
        poly = {"type": "PolyLR", "eta_min": 0.0, "power": 1.0, "begin": 1500, "end": "max_iters"}
        assert cfg["train_cfg"]["max_iters"] == iters
        assert cfg["param_scheduler"][1] == poly
        assert cfg["model"]["backbone"]["out_indices"] == [2, 5, 8, 11]
        assert cfg["model"]["backbone"]["pretrained"] == "timm/vit_base_patch16_224.orig_in21k_ft_in1k"


def test_dinov3_configs_name_dinov3_weights():
    vit = load_config(ROOT / "configs" / FOUNDATION_CONFIGS[4])
    assert vit["model"]["backbone"]["pretrained"] == "timm/vit_small_patch16_dinov3.lvd1689m"
    assert vit["optim_wrapper"]["optimizer"]["weight_decay"] == 1e-3
    head = vit["model"]["decode_head"]
    assert head["dropout_before_norm"] and head["dropout_ratio"] == 0.1
    convnext = load_config(ROOT / "configs" / FOUNDATION_CONFIGS[5])
    assert convnext["model"]["backbone"]["pretrained"] == "timm/convnext_tiny.dinov3_lvd1689m"
    decay = {"decay_rate": 0.9, "decay_type": "stage_wise", "num_layers": 6}
    assert convnext["optim_wrapper"]["paramwise_cfg"] == decay
