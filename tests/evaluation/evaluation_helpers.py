"""Tiny segmentors for the evaluation tests: a real MiT-based one, and a pointwise one whose output at
a pixel depends on that pixel only (so padding a batch cannot change it: exact comparisons)."""

import torch
from torch import nn

from segaccel.models import Segmentor

IN_CHANNELS = [8, 8, 8, 8]


def tiny_segformer(num_classes: int = 4, seed: int = 0) -> Segmentor:
    """MiT (attention with spatial reduction) + SegformerHead, a few thousand weights."""
    torch.manual_seed(seed)
    model = Segmentor(
        backbone={
            "type": "MixVisionTransformer",
            "embed_dims": 8,
            "num_layers": [1, 1, 1, 1],
            "num_heads": [1, 2, 5, 8],
            "sr_ratios": [8, 4, 2, 1],
            "drop_path_rate": 0.0,
        },
        decode_head={
            "type": "SegformerHead",
            "in_channels": [8, 16, 40, 64],
            "channels": 16,
            "num_classes": num_classes,
            "dropout_ratio": 0.0,
        },
        data_preprocessor={"size_divisor": 32},
    )
    return model.eval()


class PointwiseStages(nn.Module):
    """Four "stages" at full resolution, each a 1x1 convolution of the image."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3, c, 1) for c in IN_CHANNELS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.tanh(conv(x)) for conv in self.convs]


def pointwise_segmentor(num_classes: int = 3, seed: int = 0) -> Segmentor:
    """A Segmentor (SegformerHead, 1x1 everything) whose backbone is pointwise."""
    torch.manual_seed(seed)
    model = Segmentor(
        backbone={"type": "MixVisionTransformer", "embed_dims": 8, "num_layers": [1, 1, 1, 1]},
        decode_head={
            "type": "SegformerHead",
            "in_channels": IN_CHANNELS,
            "channels": 8,
            "num_classes": num_classes,
            "dropout_ratio": 0.0,
        },
        data_preprocessor={"size_divisor": 8, "test_cfg": {"size_divisor": 8}},
    )
    model.backbone = PointwiseStages()
    for module in model.modules():  # non-trivial BN statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()
