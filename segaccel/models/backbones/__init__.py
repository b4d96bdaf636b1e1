"""Backbones (encoders): image `(N, 3, H, W)` → list of feature maps."""

from segaccel.models.backbones.mit import MIT_SETTINGS, MixVisionTransformer
from segaccel.models.backbones.timm_backbone import TimmBackbone

__all__ = ["MIT_SETTINGS", "MixVisionTransformer", "TimmBackbone"]
