"""Decode heads: backbone features → per-pixel logits, plus their losses."""

from segaccel.models.heads.aspp_head import ASPPHead
from segaccel.models.heads.bn_head import BNHead
from segaccel.models.heads.decode_head import BaseDecodeHead
from segaccel.models.heads.dpt_head import DPTHead
from segaccel.models.heads.fcn_head import FCNHead
from segaccel.models.heads.psp_head import PSPHead
from segaccel.models.heads.segformer_head import SegformerHead
from segaccel.models.heads.sep_aspp_head import DepthwiseSeparableASPPHead
from segaccel.models.heads.uper_head import UPerHead

__all__ = [
    "ASPPHead",
    "BNHead",
    "BaseDecodeHead",
    "DPTHead",
    "DepthwiseSeparableASPPHead",
    "FCNHead",
    "PSPHead",
    "SegformerHead",
    "UPerHead",
]
