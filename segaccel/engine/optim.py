"""Optimizers from `optim_wrapper` configs, with MMEngine's paramwise options.

```yaml
optim_wrapper:
  optimizer: {type: AdamW, lr: 6.0e-5, betas: [0.9, 0.999], weight_decay: 0.01}
  paramwise_cfg:
    custom_keys: {pos_block: {decay_mult: 0.0}, norm: {decay_mult: 0.0}, head: {lr_mult: 10.0}}
    norm_decay_mult: 0.0      # optional: no decay on every normalisation layer
    bias_decay_mult: 0.0      # optional: no decay on biases
    split_backbone: true      # optional: backbone and other parameters in separate groups, marked
                              # `backbone: true/false` (for per-group schedules: TwoStageWarmupPolyLR)
  clip_grad: {max_norm: 1.0}  # optional
  accumulative_counts: 1
```

`custom_keys` match substrings of parameter names, the longest key first (as MMEngine). Parameters
with equal `(lr_mult, decay_mult)` share one param group, so foreach/fused kernels stay fast.
Parameters without gradients (a frozen backbone) are in no group. The groups are logged (with
layer-wise decay, named `layer_<id>_decay`/`layer_<id>_no_decay` as MMSegmentation's log does).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from segaccel.engine.layer_decay import layer_decay_multipliers, layer_ids
from segaccel.registry import OPTIMIZERS

logger = logging.getLogger(__name__)

_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def param_multipliers(
    model: nn.Module, paramwise_cfg: dict[str, Any] | None
) -> dict[str, tuple[float, float]]:
    """`{param_name: (lr_mult, decay_mult)}` for every trainable parameter."""
    cfg = dict(paramwise_cfg or {})
    if "decay_rate" in cfg:  # MMSegmentation's LearningRateDecayOptimizerConstructor (ConvNeXt)
        unknown = sorted(set(cfg) - {"decay_rate", "decay_type", "num_layers"})
        if unknown:
            raise ValueError(f"optim_wrapper.paramwise_cfg: {unknown} cannot be combined with decay_rate")
        if "num_layers" not in cfg:
            raise ValueError("optim_wrapper.paramwise_cfg: decay_rate needs num_layers")
        return layer_decay_multipliers(
            model, cfg["decay_rate"], cfg["num_layers"], cfg.get("decay_type", "layer_wise")
        )
    custom_keys: dict[str, dict[str, float]] = cfg.pop("custom_keys", {}) or {}
    norm_decay_mult = cfg.pop("norm_decay_mult", None)
    bias_decay_mult = cfg.pop("bias_decay_mult", None)
    if cfg:
        raise ValueError(f"optim_wrapper.paramwise_cfg: unknown options {sorted(cfg)}")
    keys = sorted(sorted(custom_keys), key=len, reverse=True)

    out: dict[str, tuple[float, float]] = {}
    for module_name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            name = f"{module_name}.{pname}" if module_name else pname
            lr_mult, decay_mult = 1.0, 1.0
            matched = next((k for k in keys if k in name), None)
            if matched is not None:
                lr_mult = custom_keys[matched].get("lr_mult", 1.0)
                decay_mult = custom_keys[matched].get("decay_mult", 1.0)
            else:
                if norm_decay_mult is not None and isinstance(module, _NORM_TYPES):
                    decay_mult = norm_decay_mult
                elif bias_decay_mult is not None and pname == "bias":
                    decay_mult = bias_decay_mult
            out[name] = (float(lr_mult), float(decay_mult))
    return out


def build_optimizer(model: nn.Module, optim_wrapper: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer of `optim_wrapper.optimizer` with param groups from `paramwise_cfg`."""
    opt_cfg = dict(optim_wrapper.get("optimizer") or {})
    if "type" not in opt_cfg:
        raise ValueError("optim_wrapper.optimizer: missing `type` (e.g. AdamW or SGD)")
    lr = opt_cfg.get("lr")
    if lr is None:
        raise ValueError("optim_wrapper.optimizer: missing `lr`")
    weight_decay = opt_cfg.get("weight_decay", 0.0)
    paramwise_cfg = dict(optim_wrapper.get("paramwise_cfg") or {})
    split_backbone = bool(paramwise_cfg.pop("split_backbone", False))
    mults = param_multipliers(model, paramwise_cfg)
    params = dict(model.named_parameters())

    groups: dict[tuple, list[str]] = {}
    for name, key in mults.items():
        if split_backbone:
            key = (*key, name.startswith("backbone."))
        groups.setdefault(key, []).append(name)
    param_groups = [
        {
            "params": [params[name] for name in names],
            "lr": lr * key[0],
            "weight_decay": weight_decay * key[1],
            "lr_mult": key[0],
            "decay_mult": key[1],
            **({"backbone": key[2]} if split_backbone else {}),
        }
        for key, names in groups.items()
    ]
    optimizer = OPTIMIZERS.build(opt_cfg, key="optim_wrapper.optimizer", params=param_groups)
    logger.info(describe_param_groups(model, paramwise_cfg, groups, lr, weight_decay))
    return optimizer


def describe_param_groups(
    model: nn.Module,
    paramwise_cfg: dict[str, Any] | None,
    groups: dict[tuple, list[str]],
    lr: float,
    weight_decay: float,
) -> str:
    """One line per param group: its name, lr, weight decay, size and first/last parameter names."""
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    lines = [f"optimizer param groups ({len(groups)}; {frozen / 1e6:.2f} M frozen parameters in none):"]
    ids = {}
    if paramwise_cfg and "decay_rate" in paramwise_cfg:
        ids = layer_ids(model, paramwise_cfg["num_layers"], paramwise_cfg.get("decay_type", "layer_wise"))
    params = dict(model.named_parameters())
    rows = []
    for key, names in groups.items():
        lr_mult, decay_mult = key[:2]
        if ids:
            label = f"layer_{ids[names[0]]}_{'decay' if decay_mult else 'no_decay'}"
        else:
            label = f"lr_mult {lr_mult:g}, decay_mult {decay_mult:g}"
        if len(key) > 2:
            label += ", backbone" if key[2] else ", not backbone"
        span = names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]}"
        size = sum(params[n].numel() for n in names)
        rows.append(
            (ids.get(names[0], 0), f"  {label}: lr {lr * lr_mult:.4g} (x{lr_mult:.4g}), weight_decay "
             f"{weight_decay * decay_mult:g}, {len(names)} tensors / {size / 1e6:.3f} M: {span}")
        )
    lines += [row for _, row in sorted(rows, key=lambda r: r[0])]
    return "\n".join(lines)
