"""Layer-wise learning-rate decay (MMSegmentation's `LearningRateDecayOptimizerConstructor`) for
ConvNeXt and ViT backbones, as `paramwise_cfg` options:

```yaml
optim_wrapper:
  paramwise_cfg: {decay_rate: 0.9, decay_type: stage_wise, num_layers: 6}    # ConvNeXt
  paramwise_cfg: {decay_rate: 0.65, decay_type: layer_wise, num_layers: 12}  # ViT: its depth
```

Parameters get the lr multiplier `decay_rate ** (num_layers + 2 - id - 1)`, where `id` counts from
the stem (0) to the heads (last id, multiplier 1); 1-D parameters and biases get no weight decay.
Understood names:
- ConvNeXt: timm's (`backbone.timm_model.stem_*`, `stages_<i>.downsample`, `stages_<i>.blocks.<j>`)
  and MMSegmentation's (`backbone.downsample_layers.<i>`, `backbone.stages.<i>.<j>`);
- ViT (MMSegmentation's `get_layer_id_for_vit`, `layer_wise` only): the embeddings (class, register
  and mask tokens, position and patch embedding) have id 0, block `i` has `i + 1`, everything else
  `num_layers + 1` — timm's names (`backbone.timm_model.blocks.<i>`) and MMSegmentation's
  (`backbone.layers.<i>`). The backbone family is told by its parameter names.
"""

from __future__ import annotations

import re

from torch import nn

_STEM = re.compile(r"^backbone\.(?:timm_model\.stem_|downsample_layers\.0\.)")
_DOWNSAMPLE = re.compile(r"^backbone\.(?:timm_model\.stages_(\d+)\.downsample|downsample_layers\.(\d+))\.")
_BLOCK = re.compile(r"^backbone\.(?:timm_model\.stages_(\d+)\.blocks\.(\d+)|stages\.(\d+)\.(\d+))\.")
_VIT_EMBED = re.compile(
    r"^backbone\.(?:timm_model\.)?(?:(?:cls_token|reg_token|mask_token|pos_embed)$|(?:patch_embed|norm_pre)\.)"
)
_VIT_BLOCK = re.compile(r"^backbone\.(?:timm_model\.blocks|layers)\.(\d+)\.")
DECAY_TYPES = ("layer_wise", "stage_wise")


def convnext_stage_id(name: str, num_layers: int) -> int:
    """MMSegmentation's `get_stage_id_for_convnext` (`num_layers` already + 2)."""
    if _STEM.match(name) or _DOWNSAMPLE.match(name):
        return 0
    block = _BLOCK.match(name)
    if block:
        return int(block.group(1) or block.group(3)) + 1
    return num_layers - 1


def convnext_layer_id(name: str, max_layer_id: int) -> int:
    """MMSegmentation's `get_layer_id_for_convnext` (`max_layer_id` = the configured `num_layers`)."""
    if _STEM.match(name):
        return 0
    down = _DOWNSAMPLE.match(name)
    if down:
        stage = int(down.group(1) or down.group(2))
        return {0: 0, 1: 2, 2: 3}.get(stage, max_layer_id)
    block = _BLOCK.match(name)
    if block:
        stage = int(block.group(1) or block.group(3))
        index = int(block.group(2) or block.group(4))
        return {0: 1, 1: 2}.get(stage, 3 + index // 3 if stage == 2 else max_layer_id)
    return max_layer_id + 1


def vit_layer_id(name: str, max_layer_id: int) -> int:
    """MMSegmentation's `get_layer_id_for_vit` (`max_layer_id` = the configured `num_layers` + 2)."""
    if _VIT_EMBED.match(name):
        return 0
    block = _VIT_BLOCK.match(name)
    if block:
        return int(block.group(1)) + 1
    return max_layer_id - 1


def is_vit(names: list[str]) -> bool:
    """Whether parameter names are a ViT backbone's (blocks directly under the backbone)."""
    return any(_VIT_BLOCK.match(name) for name in names)


def layer_ids(model: nn.Module, num_layers: int, decay_type: str = "layer_wise") -> dict[str, int]:
    """`{param_name: layer id}` for every trainable parameter (frozen ones are left out)."""
    if decay_type not in DECAY_TYPES:
        raise ValueError(
            f"optim_wrapper.paramwise_cfg.decay_type: 'layer_wise' or 'stage_wise', got {decay_type!r}"
        )
    names = [name for name, param in model.named_parameters() if param.requires_grad]
    total = num_layers + 2
    if is_vit(names):
        if decay_type != "layer_wise":
            raise ValueError(
                "optim_wrapper.paramwise_cfg.decay_type: ViT backbones take 'layer_wise' only "
                "(MMSegmentation's stage_wise is for ConvNeXt)"
            )
        return {name: vit_layer_id(name, total) for name in names}
    if decay_type == "stage_wise":
        return {name: convnext_stage_id(name, total) for name in names}
    return {name: convnext_layer_id(name, num_layers) for name in names}


def layer_decay_multipliers(
    model: nn.Module, decay_rate: float, num_layers: int, decay_type: str = "layer_wise"
) -> dict[str, tuple[float, float]]:
    """`{param_name: (lr_mult, decay_mult)}` with MMSegmentation's layer or stage decay."""
    total = num_layers + 2
    params = dict(model.named_parameters())
    out: dict[str, tuple[float, float]] = {}
    for name, layer_id in layer_ids(model, num_layers, decay_type).items():
        # MMSegmentation compares full names with ("pos_embed", "cls_token"), which never match:
        # those two (3-D) keep their weight decay there, and here.
        no_decay = params[name].ndim == 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")
        out[name] = (float(decay_rate ** (total - layer_id - 1)), 0.0 if no_decay else 1.0)
    return out
