"""Tiny models of every shipped family, small enough to export and run on a CPU in seconds.

Each is the family's base config (`configs/_base_/models/...`; DINOv3, Mask2Former, EoMT: a shipped
config) with narrow,
shallow parts and no auxiliary head; BatchNorm statistics are randomised so a random model predicts
several classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from segaccel.config import load_config
from segaccel.models import Segmentor

ROOT = Path(__file__).resolve().parents[2]
BASES = {  # the config whose `model` each family starts from, relative to configs/
    "segformer": "_base_/models/segformer_mit-b0.yaml",
    "fcn": "_base_/models/fcn_r50-d8.yaml",
    "pspnet": "_base_/models/pspnet_r50-d8.yaml",
    "deeplabv3": "_base_/models/deeplabv3_r50-d8.yaml",
    "deeplabv3plus": "_base_/models/deeplabv3plus_r50-d8.yaml",
    "upernet-swin": "_base_/models/upernet_swin.yaml",
    "upernet-convnext": "_base_/models/upernet_convnext.yaml",
    "dinov2": "_base_/models/dinov2_bnhead.yaml",
    "dinov3": "dinov3/dinov3_vit-s16_linear_8xb2-40k_ade20k-512x512.yaml",
    "dpt": "_base_/models/dpt_vit-b16.yaml",
    "upernet-vit": "_base_/models/upernet_vit-b16_mln.yaml",
    "mask2former": "mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.yaml",
    "eomt": "eomt/eomt_vit-s-dinov2_4xb4-39k_ade20k-512x512.yaml",
}
NUM_CLASSES = 5
MASK_FAMILIES = ("mask2former", "eomt")
MASK_SCALE = {"mask2former": 8.0, "eomt": 4.0}
RESNET_D8 = {  # MMSegmentation's ResNetV1c-D8 layout (dilated last stages), narrow and shallow
    "type": "ResNetV1c",
    "depth": 18,
    "stem_channels": 8,
    "base_channels": 8,
    "strides": [1, 2, 1, 1],
    "dilations": [1, 1, 2, 4],
    "out_indices": [0, 1, 2, 3],
    "contract_dilation": True,
}


def tiny_cfg(family: str) -> dict[str, Any]:
    """The family's base model config, shrunk (see the module docstring)."""
    cfg = load_config(ROOT / "configs" / BASES[family])["model"]
    cfg.pop("type", None)
    cfg["auxiliary_head"] = None
    head = cfg["decode_head"]
    head.update(num_classes=NUM_CLASSES)
    if family not in MASK_FAMILIES:  # mask classifiers have no dropout before a classifier
        head["dropout_ratio"] = 0.0
    if family == "segformer":
        cfg["backbone"].update(embed_dims=8, num_layers=[1, 1, 1, 1], drop_path_rate=0.0)
        head.update(in_channels=[8, 16, 40, 64], channels=16)
    elif family in ("fcn", "pspnet", "deeplabv3", "deeplabv3plus"):
        cfg["backbone"] = dict(RESNET_D8)
        head.update(in_channels=64, channels=16)
        if family == "deeplabv3plus":
            head.update(c1_in_channels=8, c1_channels=8)
    elif family == "upernet-swin":
        cfg["backbone"] = {
            "type": "SwinTransformer",
            "embed_dims": 8,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 1, 1],
            "window_size": 7,
            "drop_path_rate": 0.0,
        }
        head.update(in_channels=[8, 16, 32, 64], channels=8)
    elif family == "upernet-convnext":
        cfg["backbone"] = {
            "type": "ConvNeXt",
            "arch": {"depths": [1, 1, 1, 1], "channels": [8, 16, 32, 64]},
            "out_indices": [0, 1, 2, 3],
            "gap_before_final_norm": False,
            "drop_path_rate": 0.0,
        }
        head.update(in_channels=[8, 16, 32, 64], channels=8)
    elif family in VIT_FAMILIES:
        _shrink_vit(family, cfg["backbone"], head, cfg.get("neck"))
    elif family == "mask2former":
        _shrink_mask2former(cfg, head)
    elif family == "eomt":  # 4 blocks at dim 32, the queries joining the last 2 (masked attention on)
        cfg["backbone"].update(pretrained=None, drop_path_rate=0.0)
        cfg["backbone"]["model_kwargs"].update(embed_dim=VIT_DIM, depth=4, num_heads=2, img_size=64)
        head.update(in_channels=VIT_DIM, num_queries=6, num_blocks=2)
        head.update(mask_annealing_start_steps=None, mask_annealing_end_steps=None)
    cfg["id2label"] = {i: f"class_{i}" for i in range(NUM_CLASSES)}
    return cfg


VIT_FAMILIES = ("dinov2", "dinov3", "dpt", "upernet-vit")
VIT_DIM = 32


def _shrink_vit(
    family: str, backbone: dict[str, Any], head: dict[str, Any], neck: dict[str, Any] | None
) -> None:
    """The shipped ViT config's model (timm architecture, padding, class token, neck, head) with a
    narrow ViT of at most 4 blocks, random weights."""
    depth = 2 if family in ("dinov2", "dinov3") else 4
    shrink = {"depth": depth, "embed_dim": VIT_DIM, "num_heads": 2}
    backbone.update(pretrained=None, drop_path_rate=0.0)
    backbone["model_kwargs"] = {**backbone.get("model_kwargs", {}), **shrink}
    if family == "dinov2":  # DINOv2 with registers; the multi-layer BNHead (levels concatenated)
        backbone.update(model_name="vit_small_patch14_reg4_dinov2", out_indices=[0, 1])
        head.update(in_channels=[VIT_DIM] * 2, in_index=[0, 1], channels=2 * VIT_DIM)
    elif family == "dinov3":  # the last block, final norm, linear head (RoPE, storage tokens)
        head.update(in_channels=[VIT_DIM], channels=VIT_DIM)
        backbone["out_indices"] = [-1]
    elif family == "dpt":  # [patch, cls] per level
        backbone["out_indices"] = [0, 1, 2, 3]
        head.update(
            in_channels=[2 * VIT_DIM] * 4,
            channels=16,
            embed_dims=VIT_DIM,
            post_process_channels=[8, 16, 32, 32],
        )
    else:  # upernet-vit: MultiLevelNeck x4, x2, x1, x0.5
        backbone["out_indices"] = [0, 1, 2, 3]
        assert neck is not None
        neck.update(in_channels=[VIT_DIM] * 4, out_channels=VIT_DIM)
        head.update(in_channels=[VIT_DIM] * 4, channels=16)


def _shrink_mask2former(cfg: dict[str, Any], head: dict[str, Any]) -> None:
    """The R50 config's head at width 16 (1 deformable-encoder layer, 2 decoder layers, 6 queries) on
    a ResNet-18 of width 8 (strides 4..32, no dilation)."""
    cfg["backbone"] = {"type": "ResNet", "depth": 18, "base_channels": 8, "out_indices": [0, 1, 2, 3]}
    # the shipped config pads test images to a multiple of 32 in its preprocessor; an exported graph
    # never pads (its runtime does, from config.json), so the graph is compared with unpadded PyTorch
    cfg["data_preprocessor"].pop("test_cfg", None)
    attn = {"embed_dims": 16, "num_heads": 2}
    ffn = {"embed_dims": 16, "feedforward_channels": 32}
    head.update(in_channels=[8, 16, 32, 64], feat_channels=16, out_channels=16, num_queries=6)
    decoder = head["pixel_decoder"]
    decoder["norm_cfg"] = {"type": "GN", "num_groups": 4}
    decoder["encoder"] = {
        "num_layers": 1,
        "layer_cfg": {"self_attn_cfg": {**attn, "num_levels": 3, "num_points": 2}, "ffn_cfg": ffn},
    }
    decoder["positional_encoding"] = {"num_feats": 8, "normalize": True}
    head["positional_encoding"] = {"num_feats": 8, "normalize": True}
    head["transformer_decoder"] = {
        "num_layers": 2,
        "layer_cfg": {"self_attn_cfg": attn, "cross_attn_cfg": attn, "ffn_cfg": ffn},
    }


def tiny_model(family: str, seed: int = 0, **overrides: Any) -> Segmentor:
    """A random tiny model of `family` in eval mode, with BN statistics that spread its predictions."""
    torch.manual_seed(seed)
    model = Segmentor(**{**tiny_cfg(family), **overrides}).eval()
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=g) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) * 0.5 + 0.75)
    if family in MASK_FAMILIES:  # class and mask predictions wide enough for several classes to win
        head = model.decode_head
        classes, masks = (head.cls_embed, head.mask_embed) if family == "mask2former" else (
            head.class_head, head.mask_head
        )
        with torch.no_grad():  # each query prefers its own class, none "no object"; sharper masks
            classes.weight.copy_(torch.randn(classes.weight.shape, generator=g))
            classes.weight[-1] = 0.0
            classes.bias[-1] = -10.0
            masks[-1].weight.mul_(MASK_SCALE[family])
    return model


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An RGB uint8 `(h, w, 3)` image: smooth shapes plus noise, so predictions vary over it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], axis=-1)
    noise = rng.integers(0, 64, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def pytorch_logits(model: Segmentor, pixels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The PyTorch model's own logits at the input size for uint8 `(N, C, H, W)` pixels: its data
    preprocessor, then `encode_decode`; where `mask` (`(N, H, W)`) is 0, the preprocessor's pad value."""
    data = model.data_preprocessor({"inputs": list(pixels)}, training=False)
    x = data["inputs"]
    if mask is not None:
        x = torch.where(mask[:, None] != 0, x, torch.tensor(float(model.data_preprocessor.pad_val)))
    hw = tuple(x.shape[-2:])
    with torch.no_grad():
        return model.encode_decode(x, [{"img_shape": hw, "pad_shape": hw, "ori_shape": hw}] * x.shape[0])
