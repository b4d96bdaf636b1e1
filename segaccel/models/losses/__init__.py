"""Losses (and the pixel accuracy logged beside them)."""

from segaccel.models.losses.accuracy import accuracy, label_accuracy
from segaccel.models.losses.cross_entropy_loss import CrossEntropyLoss, binary_cross_entropy, cross_entropy
from segaccel.models.losses.dice_loss import DiceLoss
from segaccel.models.losses.focal_loss import FocalLoss
from segaccel.models.losses.lovasz_loss import LovaszLoss
from segaccel.models.losses.tversky_loss import TverskyLoss

__all__ = [
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszLoss",
    "TverskyLoss",
    "accuracy",
    "binary_cross_entropy",
    "cross_entropy",
    "label_accuracy",
]
