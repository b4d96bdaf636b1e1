"""Layer-wise learning-rate decay for ConvNeXt backbones (MMSegmentation's
`LearningRateDecayOptimizerConstructor`), as `paramwise_cfg` options:

```yaml
optim_wrapper:
  paramwise_cfg: {decay_rate: 0.9, decay_type: stage_wise, num_layers: 6}
```

Parameters get the lr multiplier `decay_rate ** (num_layers + 2 - id - 1)`, where `id` counts from
the stem (0) to the heads (last id, multiplier 1); 1-D parameters and biases get no weight decay.
Names of both timm's ConvNeXt (`backbone.timm_model.stem_*`, `stages_<i>.downsample`,
`stages_<i>.blocks.<j>`) and MMSegmentation's (`backbone.downsample_layers.<i>`,
`backbone.stages.<i>.<j>`) are understood.
"""

from __future__ import annotations

import re

from torch import nn

_STEM = re.compile(r"^backbone\.(?:timm_model\.stem_|downsample_layers\.0\.)")
_DOWNSAMPLE = re.compile(r"^backbone\.(?:timm_model\.stages_(\d+)\.downsample|downsample_layers\.(\d+))\.")
_BLOCK = re.compile(r"^backbone\.(?:timm_model\.stages_(\d+)\.blocks\.(\d+)|stages\.(\d+)\.(\d+))\.")


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


def layer_decay_multipliers(
    model: nn.Module, decay_rate: float, num_layers: int, decay_type: str = "layer_wise"
) -> dict[str, tuple[float, float]]:
    """`{param_name: (lr_mult, decay_mult)}` with MMSegmentation's layer or stage decay."""
    if decay_type not in ("layer_wise", "stage_wise"):
        raise ValueError(
            f"optim_wrapper.paramwise_cfg.decay_type: 'layer_wise' or 'stage_wise', got {decay_type!r}"
        )
    total = num_layers + 2
    out: dict[str, tuple[float, float]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim == 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")
        if decay_type == "stage_wise":
            layer_id = convnext_stage_id(name, total)
        else:
            layer_id = convnext_layer_id(name, num_layers)
        out[name] = (float(decay_rate ** (total - layer_id - 1)), 0.0 if no_decay else 1.0)
    return out
