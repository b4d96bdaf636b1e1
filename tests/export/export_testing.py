"""Tiny models of every shipped family, small enough to export and run on a CPU in seconds.

Each is the family's base config (`configs/_base_/models/...`) with narrow, shallow parts and no
auxiliary head; BatchNorm statistics are randomised so a random model predicts several classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from segaccel.config import load_config
from segaccel.models import Segmentor

ROOT = Path(__file__).resolve().parents[2]
BASES = {
    "segformer": "segformer_mit-b0.yaml",
    "fcn": "fcn_r50-d8.yaml",
    "pspnet": "pspnet_r50-d8.yaml",
    "deeplabv3": "deeplabv3_r50-d8.yaml",
    "deeplabv3plus": "deeplabv3plus_r50-d8.yaml",
    "upernet-swin": "upernet_swin.yaml",
    "upernet-convnext": "upernet_convnext.yaml",
}
NUM_CLASSES = 5
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
    cfg = load_config(ROOT / "configs" / "_base_" / "models" / BASES[family])["model"]
    cfg.pop("type", None)
    cfg["auxiliary_head"] = None
    head = cfg["decode_head"]
    head.update(num_classes=NUM_CLASSES, dropout_ratio=0.0)
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
    cfg["id2label"] = {i: f"class_{i}" for i in range(NUM_CLASSES)}
    return cfg


def tiny_model(family: str, seed: int = 0, **overrides: Any) -> Segmentor:
    """A random tiny model of `family` in eval mode, with BN statistics that spread its predictions."""
    torch.manual_seed(seed)
    model = Segmentor(**{**tiny_cfg(family), **overrides}).eval()
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=g) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) * 0.5 + 0.75)
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
