"""Decode heads: backbone features → per-pixel logits, plus their losses."""

from segaccel.models.heads.decode_head import BaseDecodeHead
from segaccel.models.heads.segformer_head import SegformerHead

__all__ = ["BaseDecodeHead", "SegformerHead"]
