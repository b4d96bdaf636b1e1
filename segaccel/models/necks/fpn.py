"""Feature pyramid network (Lin et al., 2017) as MMSegmentation's `FPN` neck.

Weights: `lateral_convs.{i}` (1x1) and `fpn_convs.{i}` (3x3, then the extra stride-2 convs), all
ConvModules, so MMSegmentation checkpoints map one to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segaccel.models.utils import ConvModule, resize

_EXTRA_SOURCES = ("on_input", "on_lateral", "on_output")


class FPN(nn.Module):
    """Lateral 1x1 convs + top-down sum + 3x3 convs: `num_outs` maps of `out_channels`.

    Args:
        in_channels: channels of each input map.
        out_channels: channels of every output.
        num_outs: number of outputs; beyond the used inputs, extra levels come from stride-2 max
            pooling, or from stride-2 convs with `add_extra_convs`.
        start_level, end_level: the inputs used (`end_level=-1`: up to the last, exclusive end otherwise).
        add_extra_convs: False, True (`on_input`), `on_input`, `on_lateral` or `on_output`.
        relu_before_extra_convs: ReLU before each extra conv after the first.
        no_norm_on_lateral: no norm on the lateral convs.
        conv_cfg, norm_cfg, act_cfg: of every ConvModule (no norm, no activation by default).
        upsample_cfg: `F.interpolate` arguments of the top-down pathway (`mode`, or `scale_factor`).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        num_outs: int,
        start_level: int = 0,
        end_level: int = -1,
        add_extra_convs: bool | str = False,
        relu_before_extra_convs: bool = False,
        no_norm_on_lateral: bool = False,
        conv_cfg: dict[str, Any] | None = None,
        norm_cfg: dict[str, Any] | None = None,
        act_cfg: dict[str, Any] | None = None,
        upsample_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(in_channels, (list, tuple)):
            raise ValueError(f"FPN: in_channels must be a list, got {in_channels!r}")
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_ins = len(in_channels)
        self.num_outs = num_outs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.no_norm_on_lateral = no_norm_on_lateral
        self.upsample_cfg = dict(upsample_cfg or {"mode": "nearest"})
        if end_level == -1:
            self.backbone_end_level = self.num_ins
            if num_outs < self.num_ins - start_level:
                raise ValueError(
                    f"FPN: num_outs={num_outs} is fewer than the {self.num_ins - start_level} inputs used"
                )
        else:
            self.backbone_end_level = end_level
            if end_level > self.num_ins or num_outs != end_level - start_level:
                raise ValueError(
                    f"FPN: with end_level={end_level}, need end_level <= {self.num_ins} and num_outs == "
                    f"end_level - start_level, got num_outs={num_outs}"
                )
        self.start_level = start_level
        self.end_level = end_level
        if add_extra_convs is True:
            add_extra_convs = "on_input"
        if add_extra_convs not in (False, *_EXTRA_SOURCES):
            raise ValueError(
                f"FPN: add_extra_convs must be a bool or one of {_EXTRA_SOURCES}, got {add_extra_convs!r}"
            )
        self.add_extra_convs = add_extra_convs

        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(start_level, self.backbone_end_level):
            self.lateral_convs.append(
                ConvModule(
                    in_channels[i],
                    out_channels,
                    1,
                    conv_cfg=conv_cfg,
                    norm_cfg=None if no_norm_on_lateral else norm_cfg,
                    act_cfg=act_cfg,
                    inplace=False,
                )
            )
            self.fpn_convs.append(
                ConvModule(
                    out_channels,
                    out_channels,
                    3,
                    padding=1,
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg,
                    inplace=False,
                )
            )
        extra_levels = num_outs - self.backbone_end_level + start_level
        if add_extra_convs and extra_levels >= 1:
            for i in range(extra_levels):
                if i == 0 and add_extra_convs == "on_input":
                    channels = in_channels[self.backbone_end_level - 1]
                else:
                    channels = out_channels
                self.fpn_convs.append(
                    ConvModule(
                        channels,
                        out_channels,
                        3,
                        stride=2,
                        padding=1,
                        conv_cfg=conv_cfg,
                        norm_cfg=norm_cfg,
                        act_cfg=act_cfg,
                        inplace=False,
                    )
                )
        for module in self.modules():  # MMSegmentation's init: Xavier uniform
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Maps `[(N, C_i, h_i, w_i)]` → `num_outs` maps `(N, out_channels, h, w)`, finest first."""
        if len(inputs) != self.num_ins:
            raise ValueError(f"FPN: expected {self.num_ins} input maps, got {len(inputs)}")
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        used = len(laterals)
        for i in range(used - 1, 0, -1):
            if "scale_factor" in self.upsample_cfg:
                up = resize(laterals[i], **self.upsample_cfg)
            else:
                up = resize(laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]
        if self.num_outs > used:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - used):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                if self.add_extra_convs == "on_input":
                    source = inputs[self.backbone_end_level - 1]
                elif self.add_extra_convs == "on_lateral":
                    source = laterals[-1]
                else:
                    source = outs[-1]
                outs.append(self.fpn_convs[used](source))
                for i in range(used + 1, self.num_outs):
                    x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](x))
        return tuple(outs)
