"""FLOP counting with `torch.utils.flop_counter`, including attention on the CPU.

PyTorch's counter has formulas for the CUDA attention kernels but not for the CPU one
(`aten._scaled_dot_product_flash_attention_for_cpu`), so every ViT's attention — timm calls
`F.scaled_dot_product_attention` — counted as 0 on a CPU. `register_cpu_attention_flops()` adds the
same formula PyTorch uses for the CUDA kernels (`sdpa_flop_count`: 4·N·H·L·S·E forward, QKᵀ and AV);
`forward_flops` calls it first.
"""

from __future__ import annotations

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


def forward_flops(model: torch.nn.Module, shape: tuple[int, int]) -> int:
    """FLOPs of one `tensor`-mode forward of a `(1, 3, H, W)` input (1 multiply-add = 2 FLOPs)."""
    register_cpu_attention_flops()
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *shape), mode="tensor")
    return counter.get_total_flops()
