"""A segmentor small enough to follow by hand: a one-conv backbone and a minimal head, registered
under test names, and the samples and images the segmentor tests feed it."""

from __future__ import annotations

import torch
from torch import nn

from segaccel.models import Segmentor
from segaccel.models.heads.decode_head import BaseDecodeHead
from segaccel.registry import MODELS
from segaccel.structures import PixelData, SegDataSample


class _TestConvBackbone(nn.Module):
    """One 3x3 conv with stride 2: `(N, 3, H, W)` → `[(N, channels, ceil(H/2), ceil(W/2))]`."""

    def __init__(
        self, channels: int = 4, pretrained: str | None = None, init_cfg: dict | None = None
    ) -> None:
        super().__init__()
        self.pretrained = pretrained  # recorded only: the test checks it is dropped when saving
        self.conv = nn.Conv2d(3, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.relu(self.conv(x))]


class _TestConvHead(BaseDecodeHead):
    """The smallest decode head: one 1x1 conv, then the classifier."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conv = nn.Conv2d(self.in_channels, self.channels, 1)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(torch.relu(self.conv(self._transform_inputs(inputs))))


for _cls in (_TestConvBackbone, _TestConvHead):
    if _cls.__name__ not in MODELS:
        MODELS.register(_cls)


def tiny_cfg(num_classes: int = 3, **overrides) -> dict:
    cfg = dict(
        backbone=dict(type="_TestConvBackbone", channels=4),
        decode_head=dict(
            type="_TestConvHead", in_channels=4, channels=4, num_classes=num_classes, dropout_ratio=0.0
        ),
        data_preprocessor=dict(
            mean=(100.0, 110.0, 120.0), std=(50.0, 51.0, 52.0), size_divisor=4, test_cfg={"size_divisor": 4}
        ),
        id2label={i: f"class{i}" for i in range(num_classes)},
        palette=[[i, 2 * i, 3 * i] for i in range(num_classes)],
        test_pipeline=[dict(type="Resize", scale=(16, 12), keep_ratio=True)],
    )
    cfg.update(overrides)
    return cfg


def tiny_model(seed: int = 0, **overrides) -> Segmentor:
    torch.manual_seed(seed)
    return Segmentor(**tiny_cfg(**overrides)).eval()


def sample_with(h: int, w: int, ori: tuple | None = None, label: int | None = None, **meta) -> SegDataSample:
    ori = ori or (h, w)
    sample = SegDataSample(metainfo={"img_id": f"{h}x{w}", "ori_shape": ori, "img_shape": (h, w), **meta})
    if label is not None:
        sample.gt_sem_seg = PixelData(torch.full((1, *ori), label, dtype=torch.int64))
    return sample


def random_images(*shapes: tuple[int, int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in shapes]
