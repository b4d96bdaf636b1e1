"""Losses (and the pixel accuracy logged beside them)."""

from segaccel.models.losses.accuracy import accuracy, label_accuracy
from segaccel.models.losses.cross_entropy_loss import CrossEntropyLoss, binary_cross_entropy, cross_entropy

__all__ = ["CrossEntropyLoss", "accuracy", "binary_cross_entropy", "cross_entropy", "label_accuracy"]
