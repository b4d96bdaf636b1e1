"""Mask2Former's parts: the deformable-attention pixel decoder and the masked-attention decoder."""

from segaccel.models.heads.mask2former.layers import FFN, MultiheadAttention
from segaccel.models.heads.mask2former.ms_deform_attn import (
    MultiScaleDeformableAttention,
    multi_scale_deformable_attention,
)
from segaccel.models.heads.mask2former.pixel_decoder import MSDeformAttnPixelDecoder
from segaccel.models.heads.mask2former.positional_encoding import SinePositionalEncoding
from segaccel.models.heads.mask2former.transformer_decoder import MaskedAttentionDecoder

__all__ = [
    "FFN",
    "MSDeformAttnPixelDecoder",
    "MaskedAttentionDecoder",
    "MultiScaleDeformableAttention",
    "MultiheadAttention",
    "SinePositionalEncoding",
    "multi_scale_deformable_attention",
]
