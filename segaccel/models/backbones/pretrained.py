"""ImageNet weights for the MMSegmentation-named backbones (`ResNet*`, `SwinTransformer`, `ConvNeXt`).

`pretrained` may be:

- a local file: `.safetensors`, or a pickle read by the restricted reader (`segaccel.convert.restricted_load`:
  nothing in the file is run), in timm's, the original authors', mmpretrain's or MMSegmentation's layout;
- a Hub model id `org/name[@revision]` (e.g. `timm/resnet50c.gluon_in1k`): its `model.safetensors`;
- an `https://` URL (MMSegmentation's configs name download.openmmlab.com files), downloaded once into
  torch's hub cache, or an `open-mmlab://` name of the ones MMSegmentation's configs use.

The weights are renamed by the backbone's converter, then loaded: every weight must fit; only the
parts MMSegmentation adds for segmentation (the per-output norms `norm{i}`) may be missing.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from segaccel.convert import read_state_dict

from ..weights import find_weights_file, weights_source

logger = logging.getLogger(__name__)

OPEN_MMLAB = {
    "resnet18_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth",
    "resnet50_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
    "resnet101_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth",
}
"""MMSegmentation's `open-mmlab://` ImageNet weights of the backbones here."""

_MAY_BE_MISSING = re.compile(r"^norm\d+\.|relative_position_index$")

Converter = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def pretrained_file(pretrained: str) -> Path:
    """The local file `pretrained` names (downloading a URL or a Hub model's weights when needed)."""
    if pretrained.startswith("open-mmlab://"):
        name = pretrained[len("open-mmlab://") :]
        if name not in OPEN_MMLAB:
            raise ValueError(
                f"backbone.pretrained: {pretrained!r} is not one of the open-mmlab:// weights known here "
                f"({', '.join(sorted(OPEN_MMLAB))}); give its https:// URL, a file or a Hub id instead"
            )
        pretrained = OPEN_MMLAB[name]
    if pretrained.startswith(("https://", "http://")):
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / os.path.basename(pretrained.split("?")[0])
        if not target.is_file():
            logger.info("downloading %s to %s", pretrained, target)
            torch.hub.download_url_to_file(pretrained, str(target), progress=False)
        return target
    try:  # a file, a model folder or a Hub id, through the weights door
        return Path(find_weights_file(weights_source(pretrained)))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"backbone.pretrained: {exc}") from exc


def load_backbone_pretrained(backbone: nn.Module, pretrained: str, convert: Converter) -> None:
    """Load `pretrained` into `backbone` after renaming it with `convert`; every weight must fit."""
    file = pretrained_file(str(pretrained))
    state = convert(read_state_dict(file))
    own = backbone.state_dict()
    name = type(backbone).__name__
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(k for k in state if k in own and state[k].shape != own[k].shape)
    missing = sorted(k for k in own if k not in state and not _MAY_BE_MISSING.search(k))
    if unexpected or mismatched or missing:
        shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:8]]
        raise RuntimeError(
            f"{name}: the pretrained weights {pretrained} do not fit this backbone (check depth/arch/"
            f"embed_dims against the weights): missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}, shapes {shapes}"
        )
    backbone.load_state_dict(state, strict=False)
    left = sorted(k for k in own if k not in state)
    if left:
        logger.info("%s: %s has no %s (initialised as new)", name, pretrained, ", ".join(left[:8]))
    logger.info("%s: initialised from %s", name, pretrained)
