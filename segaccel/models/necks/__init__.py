"""Necks: backbone features → features for the decode head."""

from segaccel.models.necks.fpn import FPN

__all__ = ["FPN"]
