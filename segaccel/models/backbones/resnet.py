"""MMSegmentation's ResNet backbones: `ResNet` (V1b), `ResNetV1c` (deep stem) and `ResNetV1d` (deep stem,
average-pool shortcut), with its module names so its checkpoints load strictly.

    stem.{0,1,3,4,6,7}        deep stem (V1c/V1d): three 3x3 convs (stride 2, 1, 1), each with a norm
    conv1 / bn1               7x7 stem (plain ResNet)
    layer{i}.{j}.conv1..3 / bn1..3 / downsample.{0,1} (V1d: downsample.{1,2} after an AvgPool)

The `-d8` segmentation models (PSPNet, FCN, DeepLabV3/V3+ R50-D8) are `ResNetV1c` with
`strides=(1, 2, 1, 1)`, `dilations=(1, 1, 2, 4)` and `contract_dilation=True` (output stride 8): the
first block of a dilated stage uses half its dilation. `multi_grid` sets per-block dilations of the
last stage (DeepLabV3's `(1, 2, 4)`).

`pretrained` (ImageNet weights to start from) takes a local file, a URL, an `open-mmlab://` name
(MMSegmentation's `open-mmlab://resnet50_v1c`) or a Hub id; timm's ResNet weights
(`timm/resnet50c.gluon_in1k`, the GluonCV weights MMSegmentation's `resnet50_v1c` also comes from) are
renamed to ours (see `segaccel.convert.backbones`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.utils.checkpoint as cp
from torch import nn

from segaccel.convert.backbones import resnet_state_dict_from_timm

from ..utils import build_norm
from .pretrained import load_backbone_pretrained

_BN = {"type": "BN", "requires_grad": True}


def _norm_layer(norm_cfg: dict[str, Any], channels: int) -> nn.Module:
    return build_norm(norm_cfg, channels)


def checkpoint_block(
    block: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """`fn(x)` under activation checkpointing, its recomputation leaving BN running statistics alone.

    The backward recomputes the block's forward; BN layers in training mode would update their
    running mean/var (and batch count) a second time there, so `with_cp` would change the
    statistics. They are put back as the first forward left them once the recomputation is done.
    """
    norms = [
        m
        for m in block.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]

    @contextlib.contextmanager
    def keep_statistics() -> Iterator[None]:
        saved = [[t.clone() for t in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in norms]
        try:
            yield
        finally:
            with torch.no_grad():
                for m, (mean, var, count) in zip(norms, saved):
                    m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)

    return cp.checkpoint(
        fn, x, use_reentrant=False, context_fn=lambda: (contextlib.nullcontext(), keep_statistics())
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs (the second never dilated, as in MMSegmentation); ResNet-18/34."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        style: str = "pytorch",
        with_cp: bool = False,
        norm_cfg: dict[str, Any] = _BN,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = _norm_layer(norm_cfg, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _norm_layer(norm_cfg, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.with_cp = with_cp

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            out = checkpoint_block(self, self._inner_forward, x)
        else:
            out = self._inner_forward(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 → 3x3 (dilated, strided with style `pytorch`) → 1x1 ×4; ResNet-50/101/152."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        style: str = "pytorch",
        with_cp: bool = False,
        norm_cfg: dict[str, Any] = _BN,
    ) -> None:
        super().__init__()
        conv1_stride, conv2_stride = (1, stride) if style == "pytorch" else (stride, 1)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, conv1_stride, bias=False)
        self.bn1 = _norm_layer(norm_cfg, planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, conv2_stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = _norm_layer(norm_cfg, planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = _norm_layer(norm_cfg, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.with_cp = with_cp

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            out = checkpoint_block(self, self._inner_forward, x)
        else:
            out = self._inner_forward(x)
        return self.relu(out)


def make_res_layer(
    block: type[BasicBlock] | type[Bottleneck],
    inplanes: int,
    planes: int,
    num_blocks: int,
    stride: int,
    dilation: int,
    style: str,
    avg_down: bool,
    with_cp: bool,
    norm_cfg: dict[str, Any],
    multi_grid: Sequence[int] | None,
    contract_dilation: bool,
) -> nn.Sequential:
    """One stage, as MMSegmentation's `ResLayer`: the first block strides (and maybe contracts its
    dilation), the shortcut is a strided 1x1 conv (or AvgPool then 1x1 with `avg_down`)."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        parts: list[nn.Module] = []
        conv_stride = stride
        if avg_down:
            conv_stride = 1
            parts.append(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
        parts += [
            nn.Conv2d(inplanes, planes * block.expansion, 1, conv_stride, bias=False),
            _norm_layer(norm_cfg, planes * block.expansion),
        ]
        downsample = nn.Sequential(*parts)
    if multi_grid is None:
        first_dilation = dilation // 2 if dilation > 1 and contract_dilation else dilation
    else:
        first_dilation = multi_grid[0]
    common = dict(style=style, with_cp=with_cp, norm_cfg=norm_cfg)
    layers = [block(inplanes, planes, stride, first_dilation, downsample, **common)]
    for i in range(1, num_blocks):
        block_dilation = dilation if multi_grid is None else multi_grid[i]
        layers.append(block(planes * block.expansion, planes, 1, block_dilation, None, **common))
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """ResNet as MMSegmentation's `ResNet`: `(N, C_in, H, W)` → feature maps of the stages in `out_indices`.

    Args:
        depth: 18, 34, 50, 101 or 152.
        in_channels: image channels.
        stem_channels: output channels of the stem (64).
        base_channels: channels of the first stage's blocks (64); stage i has `base_channels * 2**i`
            (times 4 after a Bottleneck).
        num_stages: 1 to 4.
        strides, dilations: per stage (stride of its first block; dilation of its 3x3 convs).
        out_indices: stages whose outputs are returned.
        style: `pytorch` (stride on the 3x3 conv) or `caffe` (on the first 1x1).
        deep_stem: three 3x3 convs instead of the 7x7 (V1c, V1d).
        avg_down: AvgPool + stride-1 1x1 conv in the shortcut (V1d).
        frozen_stages: stem and stages 1..frozen_stages get no gradients and stay in eval mode (-1: none).
        norm_cfg: the norm layers (`{type: BN, requires_grad: true}`).
        norm_eval: keep every BatchNorm in eval mode while training (frozen statistics).
        multi_grid: dilations of the last stage's blocks (overrides its `dilations` entry).
        contract_dilation: the first block of a dilated stage uses half the dilation.
        with_cp: gradient checkpointing of each block (saves memory, costs time).
        zero_init_residual: the last norm of every block starts at 0 (each block starts as identity).
        pretrained: weights to start from (see the module docstring); None: random init.
    """

    # The blocks FSDP shards as one unit each (Accelerate's TRANSFORMER_BASED_WRAP reads this).
    _no_split_modules = ["BasicBlock", "Bottleneck"]

    arch_settings: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
        18: (BasicBlock, (2, 2, 2, 2)),
        34: (BasicBlock, (3, 4, 6, 3)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }

    def __init__(
        self,
        depth: int,
        in_channels: int = 3,
        stem_channels: int = 64,
        base_channels: int = 64,
        num_stages: int = 4,
        strides: Sequence[int] = (1, 2, 2, 2),
        dilations: Sequence[int] = (1, 1, 1, 1),
        out_indices: Sequence[int] = (0, 1, 2, 3),
        style: str = "pytorch",
        deep_stem: bool = False,
        avg_down: bool = False,
        frozen_stages: int = -1,
        norm_cfg: dict[str, Any] | None = None,
        norm_eval: bool = False,
        multi_grid: Sequence[int] | None = None,
        contract_dilation: bool = False,
        with_cp: bool = False,
        zero_init_residual: bool = True,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if depth not in self.arch_settings:
            raise ValueError(f"{name}: depth must be one of {sorted(self.arch_settings)}, got {depth!r}")
        if not 1 <= num_stages <= 4:
            raise ValueError(f"{name}: num_stages must be 1..4, got {num_stages}")
        if len(strides) != num_stages or len(dilations) != num_stages:
            raise ValueError(
                f"{name}: strides {list(strides)} and dilations {list(dilations)} need "
                f"num_stages={num_stages} entries each"
            )
        out_indices = tuple(out_indices)
        if not out_indices or not all(0 <= i < num_stages for i in out_indices):
            raise ValueError(f"{name}: out_indices {list(out_indices)} must lie in [0, {num_stages})")
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"{name}: style must be 'pytorch' or 'caffe', got {style!r}")
        block, stage_blocks = self.arch_settings[depth]
        self._no_split_modules = [block.__name__]  # the one this depth uses
        stage_blocks = stage_blocks[:num_stages]
        if multi_grid is not None and len(multi_grid) != stage_blocks[-1]:
            raise ValueError(
                f"{name}: multi_grid {list(multi_grid)} needs one dilation per block of the last stage "
                f"({stage_blocks[-1]})"
            )
        norm_cfg = dict(norm_cfg or _BN)
        self.depth = depth
        self.deep_stem = deep_stem
        self.avg_down = avg_down
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.pretrained = pretrained

        if deep_stem:
            half = stem_channels // 2
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, half, 3, 2, 1, bias=False),
                _norm_layer(norm_cfg, half),
                nn.ReLU(inplace=True),
                nn.Conv2d(half, half, 3, 1, 1, bias=False),
                _norm_layer(norm_cfg, half),
                nn.ReLU(inplace=True),
                nn.Conv2d(half, stem_channels, 3, 1, 1, bias=False),
                _norm_layer(norm_cfg, stem_channels),
                nn.ReLU(inplace=True),
            )
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, 2, 3, bias=False)
            self.bn1 = _norm_layer(norm_cfg, stem_channels)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        inplanes = stem_channels
        channels = []
        self.res_layers: list[str] = []
        for i, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2**i
            layer = make_res_layer(
                block,
                inplanes,
                planes,
                num_blocks,
                stride=strides[i],
                dilation=dilations[i],
                style=style,
                avg_down=avg_down,
                with_cp=with_cp,
                norm_cfg=norm_cfg,
                multi_grid=multi_grid if i == len(stage_blocks) - 1 else None,
                contract_dilation=contract_dilation,
            )
            inplanes = planes * block.expansion
            channels.append(inplanes)
            self.add_module(f"layer{i + 1}", layer)
            self.res_layers.append(f"layer{i + 1}")
        self.out_channels = tuple(channels[i] for i in out_indices)

        self.init_weights(zero_init_residual)
        if pretrained:
            load_backbone_pretrained(self, pretrained, resnet_state_dict_from_timm)
        self._freeze_stages()

    def init_weights(self, zero_init_residual: bool = True) -> None:
        """MMSegmentation's init: Kaiming-normal (fan_out) convs, norms 1/0, last norm of a block 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                last = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else None
                last = getattr(m, "bn2", None) if isinstance(m, BasicBlock) else last
                if last is not None and getattr(last, "weight", None) is not None:
                    nn.init.zeros_(last.weight)
                    nn.init.zeros_(last.bias)

    def _stem_modules(self) -> list[nn.Module]:
        return [self.stem] if self.deep_stem else [self.conv1, self.bn1]

    def _freeze_stages(self) -> None:
        frozen = self._stem_modules() if self.frozen_stages >= 0 else []
        frozen += [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> ResNet:
        """Train mode, keeping frozen stages (and, with `norm_eval`, every BatchNorm) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """`(N, C_in, H, W)` → `[(N, C_i, h_i, w_i) for i in out_indices]`."""
        x = self.stem(x) if self.deep_stem else self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        last = max(self.out_indices)
        for i, name in enumerate(self.res_layers[: last + 1]):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


class ResNetV1c(ResNet):
    """ResNet with the deep stem (three 3x3 convs), MMSegmentation's default segmentation backbone."""

    def __init__(self, depth: int, deep_stem: bool = True, avg_down: bool = False, **kwargs: Any) -> None:
        if not deep_stem or avg_down:
            raise ValueError("ResNetV1c has deep_stem=True and avg_down=False (use ResNet or ResNetV1d)")
        super().__init__(depth, deep_stem=True, avg_down=False, **kwargs)


class ResNetV1d(ResNet):
    """ResNet with the deep stem and an average-pool shortcut when downsampling."""

    def __init__(self, depth: int, deep_stem: bool = True, avg_down: bool = True, **kwargs: Any) -> None:
        if not deep_stem or not avg_down:
            raise ValueError("ResNetV1d has deep_stem=True and avg_down=True (use ResNet or ResNetV1c)")
        super().__init__(depth, deep_stem=True, avg_down=True, **kwargs)
