"""ImageNet backbone weights → the names of MMSegmentation's backbones (ours: `ResNet*`, `SwinTransformer`,
mmpretrain's `ConvNeXt`).

Each function takes the state dict of a weights file and returns the backbone's state dict. It
accepts the layouts such files come in and leaves keys that are already ours as they are:

- `resnet_state_dict_from_timm`: timm's ResNets (`resnet50c`, `resnet101c`: the GluonCV V1c weights
  MMSegmentation's `open-mmlab://resnet50_v1c` also comes from; `resnet50d`: V1d; `resnet50`: V1b) and
  MMSegmentation/torchvision files;
- `swin_state_dict_from_timm`: timm's Swin (`swin_tiny_patch4_window7_224.ms_in1k`), the original
  Microsoft checkpoints (what MMSegmentation's `swin_converter` reads) and MMSegmentation's converted
  files. Patch merging: timm and the original concatenate the 2x2 neighbours as
  `(0,0), (1,0), (0,1), (1,1)` blocks of channels; MMSegmentation's `nn.Unfold` interleaves them per
  channel in the order `(0,0), (0,1), (1,0), (1,1)`, so the merging norm and reduction are permuted;
- `convnext_state_dict_from_timm`: timm's ConvNeXt (`convnext_tiny.fb_in1k`) and mmpretrain files.

Classification heads and final norms are dropped; a `backbone.` prefix is removed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

StateDict = dict[str, torch.Tensor]

_HEAD = ("fc.", "head.", "head_", "norm_pre.", "pre_logits.")


def _strip(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Drop a `backbone.`/`module.` prefix (when every key has it) and classifier heads."""
    out = dict(state)
    for prefix in ("module.", "backbone."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    if any(k.startswith("backbone.") for k in out):  # a whole segmentor: keep its backbone only
        out = {k[len("backbone.") :]: v for k, v in out.items() if k.startswith("backbone.")}
    return {k: v for k, v in out.items() if not k.startswith(_HEAD)}


# --- ResNet -------------------------------------------------------------------------------------
_TIMM_DEEP_STEM = {
    "conv1.0": "stem.0",
    "conv1.1": "stem.1",
    "conv1.3": "stem.3",
    "conv1.4": "stem.4",
    "conv1.6": "stem.6",
    "bn1": "stem.7",
}


def resnet_state_dict_from_timm(state: Mapping[str, torch.Tensor]) -> StateDict:
    """timm ResNet (V1b/V1c/V1d) or MMSegmentation/torchvision ResNet weights → our `ResNet*` names."""
    state = _strip(state)
    deep_timm = "conv1.0.weight" in state
    out = {}
    for key, value in state.items():
        if deep_timm:
            module, _, leaf = key.rpartition(".")
            if module in _TIMM_DEEP_STEM:
                key = f"{_TIMM_DEEP_STEM[module]}.{leaf}"
        out[key] = value
    return out


# --- Swin ---------------------------------------------------------------------------------------
def _unfold_reduction_order(weight: torch.Tensor) -> torch.Tensor:
    """Patch-merging Linear `(C_out, 4C)` from the original block order to nn.Unfold's."""
    out_channels, in_channels = weight.shape
    weight = weight.reshape(out_channels, 4, in_channels // 4)
    return weight[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(out_channels, in_channels)


def _unfold_norm_order(weight: torch.Tensor) -> torch.Tensor:
    """Patch-merging LayerNorm `(4C,)` from the original block order to nn.Unfold's."""
    channels = weight.shape[0]
    return weight.reshape(4, channels // 4)[[0, 2, 1, 3], :].transpose(0, 1).reshape(channels)


_SWIN_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_SWIN_DOWN = re.compile(r"^layers\.(\d+)\.downsample\.(norm|reduction)\.(weight|bias)$")


def swin_state_dict_from_timm(state: Mapping[str, torch.Tensor]) -> StateDict:
    """timm / original Swin weights (or MMSegmentation's own) → our `SwinTransformer` names."""
    state = _strip(state)
    if "patch_embed.projection.weight" in state or any(k.startswith("stages.") for k in state):
        return {k: v for k, v in state.items() if not k.startswith("norm.")}  # already ours
    # timm puts the patch merging at the start of stage i (i >= 1), the original at the end of stage i-1
    timm_layout = any(k.startswith("layers.") and ".downsample." in k for k in state) and not any(
        k.startswith("layers.0.downsample.") for k in state
    )
    out = {}
    for key, value in state.items():
        if key.startswith("patch_embed."):
            out[key.replace("patch_embed.proj.", "patch_embed.projection.")] = value
            continue
        down = _SWIN_DOWN.match(key)
        if down:
            stage = int(down.group(1)) - (1 if timm_layout else 0)
            kind, leaf = down.group(2), down.group(3)
            value = _unfold_reduction_order(value) if kind == "reduction" else _unfold_norm_order(value)
            out[f"stages.{stage}.downsample.{kind}.{leaf}"] = value
            continue
        block = _SWIN_BLOCK.match(key)
        if block:
            stage, index, rest = block.groups()
            if rest == "attn_mask":  # a buffer timm may keep; ours is computed per input size
                continue
            rest = rest.replace("attn.", "attn.w_msa.", 1) if rest.startswith("attn.") else rest
            rest = rest.replace("mlp.fc1.", "ffn.layers.0.0.").replace("mlp.fc2.", "ffn.layers.1.")
            out[f"stages.{stage}.blocks.{index}.{rest}"] = value
            continue
        if key.startswith(("norm.", "layers.")):
            continue  # the final classification norm, other buffers of timm's
        out[key] = value
    return out


# --- ConvNeXt -----------------------------------------------------------------------------------
_CONVNEXT_BLOCK = {
    "conv_dw": "depthwise_conv",
    "norm": "norm",
    "mlp.fc1": "pointwise_conv1",
    "mlp.fc2": "pointwise_conv2",
}
_TIMM_CONVNEXT_BLOCK = re.compile(
    r"^stages\.(\d+)\.blocks\.(\d+)\.(.+)\.(weight|bias)$|^stages\.(\d+)\.blocks\.(\d+)\.gamma$"
)


def convnext_state_dict_from_timm(state: Mapping[str, torch.Tensor]) -> StateDict:
    """timm ConvNeXt weights (or mmpretrain's own) → our `ConvNeXt` names (mmpretrain's)."""
    state = _strip(state)
    if any(k.startswith("downsample_layers.") for k in state):
        return {k: v for k, v in state.items() if not k.startswith("norm.")}  # already ours
    out = {}
    for key, value in state.items():
        if key.startswith("stem."):
            out[key.replace("stem.", "downsample_layers.0.", 1)] = value
            continue
        down = re.match(r"^stages\.(\d+)\.downsample\.(\d)\.(.+)$", key)
        if down:
            out[f"downsample_layers.{down.group(1)}.{down.group(2)}.{down.group(3)}"] = value
            continue
        block = _TIMM_CONVNEXT_BLOCK.match(key)
        if block:
            if block.group(5) is not None:
                out[f"stages.{block.group(5)}.{block.group(6)}.gamma"] = value
            else:
                stage, index, module, leaf = block.group(1, 2, 3, 4)
                if module not in _CONVNEXT_BLOCK:
                    raise ValueError(f"ConvNeXt weights: unexpected timm key {key!r}")
                out[f"stages.{stage}.{index}.{_CONVNEXT_BLOCK[module]}.{leaf}"] = value
            continue
        if key.startswith("norm."):
            continue
        out[key] = value
    return out
