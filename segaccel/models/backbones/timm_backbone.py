"""`TimmBackbone`: any timm model that supports `features_only`, as a segmentation encoder.

timm (the `segaccel[timm]` extra) brings ResNets (`resnet50c`/`resnet101c` have MMSegmentation's
ResNet-V1c layout: a deep 3-conv stem, no average-pool shortcut, dilation contracted in the first
block of a dilated stage), ConvNeXt, Swin and hundreds more, with ImageNet weights on the Hub.

`pretrained` accepts what a config can hold:
- `None`/`False`: random init; `True`: the model's default timm weights from the Hub;
- a Hub id (`timm/resnet50c.gluon_in1k`): that repo's weights for the architecture `model_name`;
- a local file (`.safetensors`, or a `.pth`/`.bin` read with `torch.load(weights_only=True)`).
Downloads and loading are timm's own (safetensors first; `.bin` files only with `weights_only=True`).
A saved segmentor never points at these weights again (`Segmentor` drops `pretrained` when saving).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def _import_timm() -> Any:
    try:
        import timm
    except ImportError as exc:  # timm, or torchvision that timm imports, is missing
        raise ImportError(
            f"TimmBackbone needs timm (and the torchvision that matches torch): pip install 'segaccel[timm]' "
            f"({exc})"
        ) from exc
    return timm


class TimmBackbone(nn.Module):
    """A timm encoder: image `(N, C, H, W)` → feature maps `[(N, C_i, H/r_i, W/r_i)]`, channels first.

    Args:
        model_name: timm architecture name (e.g. `resnet50c`, `convnext_tiny`,
            `swin_tiny_patch4_window7_224`).
        pretrained: see the module docstring.
        out_indices: which feature levels to return (timm's indices: for ResNets 0 is the stem at
            stride 2, 1..4 are `layer1`..`layer4`, i.e. MMSegmentation's `out_indices=(0, 1, 2, 3)`).
        output_stride: 8 or 16 dilates the last stages (ResNet-style models only); None keeps 32.
        in_channels: image channels.
        drop_path_rate: stochastic depth, for the models that have it.
        model_kwargs: further `timm.create_model` arguments (e.g. `{strict_img_size: false}` for
            Swin at other sizes than it was trained).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool | str | None = None,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        output_stride: int | None = None,
        in_channels: int = 3,
        drop_path_rate: float | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        timm = _import_timm()
        if not isinstance(model_name, str) or not timm.is_model(model_name):
            raise ValueError(
                f"TimmBackbone: {model_name!r} is not a timm model name (see timm.list_models())"
            )
        if output_stride not in (None, 8, 16, 32):
            raise ValueError(f"TimmBackbone: output_stride must be None, 8, 16 or 32, got {output_stride!r}")
        kwargs: dict[str, Any] = dict(model_kwargs or {})
        kwargs.update(features_only=True, out_indices=tuple(out_indices), in_chans=in_channels)
        if output_stride is not None:
            kwargs["output_stride"] = output_stride
        if drop_path_rate is not None:
            kwargs["drop_path_rate"] = drop_path_rate
        load = bool(pretrained)
        if isinstance(pretrained, str):
            if os.path.isfile(pretrained):
                kwargs["pretrained_cfg_overlay"] = {"file": pretrained}
            else:
                repo_id = pretrained.removeprefix("hf-hub:")
                kwargs["pretrained_cfg_overlay"] = {"hf_hub_id": repo_id, "source": "hf-hub"}
        self.model_name = model_name
        self.pretrained = pretrained
        self.timm_model = timm.create_model(model_name, pretrained=load, **kwargs)
        info = self.timm_model.feature_info
        self.out_channels = tuple(info.channels())
        self.reductions = tuple(info.reduction())
        self.channels_last_output = str(getattr(self.timm_model, "output_fmt", "NCHW")).endswith("NHWC")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """`(N, C, H, W)` → one `(N, C_i, h_i, w_i)` map per `out_indices` entry."""
        feats = self.timm_model(x)
        if self.channels_last_output:  # e.g. Swin: timm gives (N, h, w, C)
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        return list(feats)

    def extra_repr(self) -> str:
        return (
            f"model_name={self.model_name!r}, out_channels={self.out_channels}, reductions={self.reductions}"
        )
