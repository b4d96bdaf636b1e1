"""Backbones (encoders): image `(N, 3, H, W)` → list of feature maps."""

from segaccel.models.backbones.convnext import ConvNeXt
from segaccel.models.backbones.mit import MIT_SETTINGS, MixVisionTransformer
from segaccel.models.backbones.resnet import ResNet, ResNetV1c, ResNetV1d
from segaccel.models.backbones.swin import SwinTransformer
from segaccel.models.backbones.timm_backbone import TimmBackbone

__all__ = [
    "MIT_SETTINGS",
    "ConvNeXt",
    "MixVisionTransformer",
    "ResNet",
    "ResNetV1c",
    "ResNetV1d",
    "SwinTransformer",
    "TimmBackbone",
]
