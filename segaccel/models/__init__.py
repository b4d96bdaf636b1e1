"""Models: the segmentor, its data preprocessor, backbones, necks, heads and losses.

Registration is explicit and happens here, once: a `type:` name in a config resolves only to a
class listed below.
"""

from segaccel.registry import MODELS

from .backbones.mit import MixVisionTransformer
from .data_preprocessor import SegDataPreProcessor
from .heads.segformer_head import SegformerHead
from .losses.cross_entropy_loss import CrossEntropyLoss
from .segmentor import Segmentor

MODELS.register(Segmentor, SegDataPreProcessor, MixVisionTransformer, SegformerHead, CrossEntropyLoss)
MODELS.register(Segmentor, name="EncoderDecoder")

__all__ = [
    "CrossEntropyLoss",
    "MixVisionTransformer",
    "SegDataPreProcessor",
    "SegformerHead",
    "Segmentor",
]
