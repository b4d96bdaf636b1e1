"""Models: the segmentor, its data preprocessor, backbones, necks, heads and losses.

Registration is explicit and happens here, once: a `type:` name in a config resolves only to a
class listed below.
"""

from segaccel.registry import MODELS

from .backbones.convnext import ConvNeXt
from .backbones.mit import MixVisionTransformer
from .backbones.resnet import ResNet, ResNetV1c, ResNetV1d
from .backbones.swin import SwinTransformer
from .backbones.timm_backbone import TimmBackbone
from .data_preprocessor import SegDataPreProcessor
from .heads.aspp_head import ASPPHead
from .heads.bn_head import BNHead
from .heads.dpt_head import DPTHead
from .heads.eomt_head import EoMTHead
from .heads.fcn_head import FCNHead
from .heads.mask2former_head import Mask2FormerHead
from .heads.psp_head import PSPHead
from .heads.segformer_head import SegformerHead
from .heads.sep_aspp_head import DepthwiseSeparableASPPHead
from .heads.uper_head import UPerHead
from .losses.cross_entropy_loss import CrossEntropyLoss
from .losses.dice_loss import DiceLoss
from .losses.focal_loss import FocalLoss
from .losses.lovasz_loss import LovaszLoss
from .losses.mask_losses import MaskClassificationLoss
from .losses.tversky_loss import TverskyLoss
from .matchers.hungarian import HungarianMatcher
from .necks.fpn import FPN
from .necks.multilevel_neck import MultiLevelNeck
from .samplers.ohem_pixel_sampler import OHEMPixelSampler
from .segmentor import Segmentor
from .tta import SegTTAModel

MODELS.register(Segmentor, SegDataPreProcessor, MixVisionTransformer, SegformerHead, CrossEntropyLoss)
MODELS.register(Segmentor, name="EncoderDecoder")
MODELS.register(DiceLoss, FocalLoss, LovaszLoss, TverskyLoss, OHEMPixelSampler)
MODELS.register(FCNHead, PSPHead, ASPPHead, DepthwiseSeparableASPPHead, UPerHead, FPN)
MODELS.register(TimmBackbone)
MODELS.register(BNHead, DPTHead, MultiLevelNeck)
MODELS.register(ResNet, ResNetV1c, ResNetV1d, SwinTransformer, ConvNeXt)
MODELS.register(SegTTAModel)
MODELS.register(Mask2FormerHead, MaskClassificationLoss, HungarianMatcher)
MODELS.register(EoMTHead)

__all__ = [
    "ASPPHead",
    "BNHead",
    "ConvNeXt",
    "CrossEntropyLoss",
    "DPTHead",
    "DepthwiseSeparableASPPHead",
    "DiceLoss",
    "EoMTHead",
    "FCNHead",
    "FPN",
    "FocalLoss",
    "HungarianMatcher",
    "LovaszLoss",
    "Mask2FormerHead",
    "MaskClassificationLoss",
    "MixVisionTransformer",
    "MultiLevelNeck",
    "OHEMPixelSampler",
    "PSPHead",
    "ResNet",
    "ResNetV1c",
    "ResNetV1d",
    "SegDataPreProcessor",
    "SegTTAModel",
    "SegformerHead",
    "Segmentor",
    "SwinTransformer",
    "TimmBackbone",
    "TverskyLoss",
    "UPerHead",
]
