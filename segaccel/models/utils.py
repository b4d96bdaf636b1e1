"""Small building blocks shared by backbones and heads.

`resize` wraps `F.interpolate`; `ConvModule` is conv → norm → activation with mmcv's submodule names
(`conv`, `bn`/`gn`/`ln`, `activate`) so MMSegmentation state dicts map one to one; `build_norm` and
`build_activation` turn mmcv-style dicts (`{type: BN, requires_grad: true}`) into modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.symbolic_shapes import statically_known_true

_LINEAR_MODES = ("linear", "bilinear", "bicubic", "trilinear")


def resize(
    input: torch.Tensor,
    size: Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
) -> torch.Tensor:
    """`F.interpolate` of an `(N, C, H, W)` tensor to `size` `(h, w)` or by `scale_factor`.

    Returns the input itself when `size` already matches (interpolating to the same size is the
    identity for every mode, so the copy is skipped). `align_corners` is only passed to the modes
    that accept it.
    """
    if size is not None:
        # symbolic sizes (torch.export with dynamic height/width) stay symbolic: no int(), and the
        # same-size shortcut only where the sizes are known equal (interpolating is the identity anyway)
        size = tuple(s if isinstance(s, torch.SymInt) else int(s) for s in size)
        same = len(size) == input.dim() - 2
        if same and all(statically_known_true(a == b) for a, b in zip(input.shape[2:], size)):
            return input
    if mode not in _LINEAR_MODES:
        align_corners = None
    return F.interpolate(input, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners)


# --- normalisation ---------------------------------------------------------------------------------
_NORMS: dict[str, tuple[str, type[nn.Module]]] = {
    "BN": ("bn", nn.BatchNorm2d),
    "BN2d": ("bn", nn.BatchNorm2d),
    "BN1d": ("bn", nn.BatchNorm1d),
    "SyncBN": ("bn", nn.SyncBatchNorm),
    "GN": ("gn", nn.GroupNorm),
    "LN": ("ln", nn.LayerNorm),
    "IN": ("in", nn.InstanceNorm2d),
}


def is_exporting() -> bool:
    """`torch.compiler.is_exporting()` where this torch has it (newer than the declared floor, 2.6)."""
    check = getattr(torch.compiler, "is_exporting", None)
    return bool(check and check())


def norm_name(cfg: dict[str, Any]) -> str:
    """mmcv's attribute name for a norm config: `bn` (BN, SyncBN), `gn`, `ln` or `in`."""
    _check_type(cfg, _NORMS, "norm_cfg")
    return _NORMS[cfg["type"]][0]


def build_norm(cfg: dict[str, Any], num_features: int) -> nn.Module:
    """A normalisation layer from `{type: BN|SyncBN|GN|LN|IN, requires_grad: bool, **kwargs}`.

    GN needs `num_groups`; the other keys (`eps`, `momentum`, `affine`, ...) go to the torch class.
    `requires_grad: false` freezes the affine parameters. SyncBN only works in distributed CUDA
    training; on CPU its forward fails in training mode.
    """
    _check_type(cfg, _NORMS, "norm_cfg")
    args = dict(cfg)
    kind = args.pop("type")
    requires_grad = args.pop("requires_grad", True)
    cls = _NORMS[kind][1]
    if kind == "GN":
        if "num_groups" not in args:
            raise ValueError(f"norm_cfg: GN needs `num_groups`, got {cfg!r}")
        layer = cls(num_channels=num_features, **args)
    else:
        layer = cls(num_features, **args)
    for param in layer.parameters():
        param.requires_grad_(requires_grad)
    return layer


# --- activation ------------------------------------------------------------------------------------
_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "ReLU": nn.ReLU,
    "ReLU6": nn.ReLU6,
    "LeakyReLU": nn.LeakyReLU,
    "PReLU": nn.PReLU,
    "ELU": nn.ELU,
    "GELU": nn.GELU,
    "SiLU": nn.SiLU,
    "Swish": nn.SiLU,
    "HSwish": nn.Hardswish,
    "HSigmoid": nn.Hardsigmoid,
    "Sigmoid": nn.Sigmoid,
    "Tanh": nn.Tanh,
}
_INPLACE = ("ReLU", "ReLU6", "LeakyReLU", "ELU", "SiLU", "Swish", "HSwish", "HSigmoid")


def build_activation(cfg: dict[str, Any], inplace: bool | None = None) -> nn.Module:
    """An activation from `{type: ReLU|GELU|LeakyReLU|..., **kwargs}`; `inplace` where supported."""
    _check_type(cfg, _ACTIVATIONS, "act_cfg")
    args = dict(cfg)
    kind = args.pop("type")
    if inplace is not None and kind in _INPLACE:
        args.setdefault("inplace", inplace)
    return _ACTIVATIONS[kind](**args)


def _check_type(cfg: Any, table: dict[str, Any], key: str) -> None:
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ValueError(f"{key}: expected a mapping with a `type` key, got {cfg!r}")
    if cfg["type"] not in table:
        raise ValueError(f"{key}: unknown type {cfg['type']!r}; expected one of {', '.join(table)}")


# --- conv + norm + activation ----------------------------------------------------------------------
_RELU = {"type": "ReLU"}  # shared default; never mutated


class ConvModule(nn.Module):
    """Conv2d → norm → activation, named as mmcv's ConvModule (`conv`, `bn`|`gn`|..., `activate`).

    `bias="auto"` gives the conv a bias only when there is no norm layer. `norm_cfg=None` or
    `act_cfg=None` leave that step out. `conv_cfg` may only be None or `{type: Conv2d}` (no other
    conv types are implemented).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool | str = "auto",
        conv_cfg: dict[str, Any] | None = None,
        norm_cfg: dict[str, Any] | None = None,
        act_cfg: dict[str, Any] | None = _RELU,
        inplace: bool = True,
    ) -> None:
        super().__init__()
        if conv_cfg is not None and conv_cfg.get("type") not in ("Conv2d", "Conv"):
            raise ValueError(f"conv_cfg: only None or {{type: Conv2d}} is supported, got {conv_cfg!r}")
        if bias == "auto":
            bias = norm_cfg is None
        self.with_norm = norm_cfg is not None
        self.with_activation = act_cfg is not None
        self.act_cfg = act_cfg
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        self.norm_name = None
        if norm_cfg is not None:
            self.norm_name = norm_name(norm_cfg)
            self.add_module(self.norm_name, build_norm(norm_cfg, out_channels))
        if act_cfg is not None:
            self.activate = build_activation(act_cfg, inplace=inplace)
        self.init_weights()

    @property
    def norm(self) -> nn.Module | None:
        return getattr(self, self.norm_name) if self.norm_name else None

    def init_weights(self) -> None:
        """mmcv's init: Kaiming normal (fan_out) for the conv, ones/zeros for the norm."""
        if self.with_activation and self.act_cfg["type"] == "LeakyReLU":
            nonlinearity, a = "leaky_relu", self.act_cfg.get("negative_slope", 0.01)
        else:
            nonlinearity, a = "relu", 0
        nn.init.kaiming_normal_(self.conv.weight, a=a, mode="fan_out", nonlinearity=nonlinearity)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        norm = self.norm
        if norm is not None and getattr(norm, "weight", None) is not None:
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, C_in, H, W)` → `(N, C_out, H', W')`."""
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        if self.with_activation:
            x = self.activate(x)
        return x


class DepthwiseSeparableConvModule(nn.Module):
    """Depthwise conv → pointwise 1x1 conv, each a ConvModule (mmcv's `depthwise_conv`, `pointwise_conv`).

    The depthwise conv has `groups=in_channels`; both use `norm_cfg` and `act_cfg` unless the
    `dw_*`/`pw_*` variants are given.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        norm_cfg: dict[str, Any] | None = None,
        act_cfg: dict[str, Any] | None = _RELU,
        dw_norm_cfg: dict[str, Any] | None | str = "default",
        dw_act_cfg: dict[str, Any] | None | str = "default",
        pw_norm_cfg: dict[str, Any] | None | str = "default",
        pw_act_cfg: dict[str, Any] | None | str = "default",
        conv_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        dw_norm_cfg = norm_cfg if dw_norm_cfg == "default" else dw_norm_cfg
        dw_act_cfg = act_cfg if dw_act_cfg == "default" else dw_act_cfg
        pw_norm_cfg = norm_cfg if pw_norm_cfg == "default" else pw_norm_cfg
        pw_act_cfg = act_cfg if pw_act_cfg == "default" else pw_act_cfg
        self.depthwise_conv = ConvModule(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=in_channels,
            conv_cfg=conv_cfg,
            norm_cfg=dw_norm_cfg,
            act_cfg=dw_act_cfg,
        )
        self.pointwise_conv = ConvModule(
            in_channels, out_channels, 1, conv_cfg=conv_cfg, norm_cfg=pw_norm_cfg, act_cfg=pw_act_cfg
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, C_in, H, W)` → `(N, C_out, H', W')`."""
        return self.pointwise_conv(self.depthwise_conv(x))
