"""Necks: backbone features → features for the decode head."""

from segaccel.models.necks.fpn import FPN
from segaccel.models.necks.multilevel_neck import MultiLevelNeck

__all__ = ["FPN", "MultiLevelNeck"]
