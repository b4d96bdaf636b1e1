"""FLOP counting: the one count behind `scripts/get_flops.py`, the docs' tables and the benchmarks.

Convention (every figure segaccel prints or documents):

- `torch.utils.flop_counter` over one `tensor`-mode forward (backbone, neck, decode head; no
  auxiliary head, no final resize) of a `(1, 3, H, W)` input, H x W the crop size unless stated;
- it counts convolutions, matmuls and attention, not norms, activations, pooling or resizes;
- **1 multiply-add = 2 FLOPs**; `GMACs` = GFLOPs / 2 is what MMSegmentation (mmengine/fvcore)
  reports under the name "FLOPs";
- parameters count every parameter of the model, auxiliary head included.

PyTorch's counter has formulas for the CUDA attention kernels but not for the CPU one
(`aten._scaled_dot_product_flash_attention_for_cpu`), so every ViT's attention — timm calls
`F.scaled_dot_product_attention` — counted as 0 on a CPU. `register_cpu_attention_flops()` adds the
same formula PyTorch uses for the CUDA kernels (`sdpa_flop_count`: 4·N·H·L·S·E forward, QKᵀ and AV);
`flop_counter()` (used by every count here and by `benchmark/train.py`'s FLOP/s) calls it first.

Counts are shape-only, so a model built on the `meta` device (no memory, no arithmetic) gives the
same figures as on a CPU in a fraction of the time; `count_config` does that, falling back to the
CPU for a model whose forward reads a tensor's value.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

_registered = False


def register_cpu_attention_flops() -> None:
    """Count the CPU scaled-dot-product attention kernel as PyTorch counts the CUDA ones (once)."""
    global _registered
    if _registered or not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return

    @register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
    def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    _registered = True


@contextmanager
def flop_counter() -> Iterator[FlopCounterMode]:
    """A silent `FlopCounterMode` with the CPU attention formula registered (`.get_total_flops()`)."""
    register_cpu_attention_flops()
    with FlopCounterMode(display=False) as counter:
        yield counter


def forward_flops(
    model: torch.nn.Module, shape: tuple[int, int], device: str | torch.device | None = None
) -> int:
    """FLOPs of one `tensor`-mode forward of a `(1, 3, H, W)` input (1 multiply-add = 2 FLOPs).

    The input is made on `device` (default: where the model's parameters are; `meta` works).
    """
    if device is None:
        device = next(model.parameters()).device
    model.eval()
    with torch.no_grad(), flop_counter() as counter:
        model(torch.zeros(1, 3, *shape, device=device), mode="tensor")
    return counter.get_total_flops()


def default_shape(config: str) -> tuple[int, int]:
    """`(h, w)` from a name ending in `-{h}x{w}.yaml`, else (512, 512)."""
    match = re.search(r"-(\d+)x(\d+)\.ya?ml$", str(config))
    return (int(match.group(1)), int(match.group(2))) if match else (512, 512)


def load_model_config(path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """The config; if a `_base_` dataset recipe is missing, the rest of it (the model needs no data)."""
    from segaccel.config import apply_overrides, load_config, merge

    try:
        return load_config(path, overrides or [])
    except FileNotFoundError:
        import yaml

        def partial(p: Path) -> dict:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            bases = raw.pop("_base_", [])
            cfg: dict = {}
            for base in [bases] if isinstance(bases, str) else bases:
                if (p.parent / base).is_file():
                    cfg = merge(cfg, partial(p.parent / base))
                elif "datasets" not in base:
                    raise FileNotFoundError(f"config file {p.parent / base} not found (a _base_ of {p})")
                else:
                    print(
                        f"note: {p.parent / base} not found; counting the model without it", file=sys.stderr
                    )
            return merge(cfg, raw)

        return apply_overrides(partial(Path(path)), overrides or [])


def build_counted_model(cfg: dict[str, Any], device: str = "cpu") -> torch.nn.Module:
    """The config's model in eval mode on `device`, its backbone's `pretrained` weights dropped."""
    import segaccel.models  # noqa: F401  (registers the model parts)
    from segaccel.registry import MODELS

    model_cfg = dict(cfg["model"])
    backbone = dict(model_cfg["backbone"])
    if "pretrained" in backbone:
        backbone["pretrained"] = None
    model_cfg["backbone"] = backbone
    model_cfg.setdefault("type", "Segmentor")
    with torch.device(device):
        return MODELS.build(model_cfg, key="model").eval()


def count_config(
    config: str,
    shape: tuple[int, int] | None = None,
    overrides: list[str] | None = None,
    device: str = "meta",
) -> dict[str, Any]:
    """Parameters and forward FLOPs of a config's model: the row `scripts/get_flops.py` prints.

    Counted on `device` (`meta`: no arithmetic, same figures); a model whose forward needs real
    values on `meta` (a `.item()`) is counted on the CPU instead. `counted_on` says which.
    """
    cfg = load_model_config(config, overrides)
    h, w = shape or default_shape(config)
    try:
        model = build_counted_model(cfg, device)
        flops = forward_flops(model, (h, w), device)
    except (NotImplementedError, RuntimeError):
        if device == "cpu":
            raise
        device = "cpu"
        model = build_counted_model(cfg, device)
        flops = forward_flops(model, (h, w), device)
    params = sum(p.numel() for p in model.parameters())
    return {
        "config": config,
        "input": f"1x3x{h}x{w}",
        "params_M": params / 1e6,
        "backbone_params_M": sum(p.numel() for p in model.backbone.parameters()) / 1e6,
        "trainable_params_M": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        "GFLOPs": flops / 1e9,
        "GMACs": flops / 2e9,
        "counted_on": device,
    }
