"""Helpers of the conversion parity tests: random weights that do not depend on a library's init."""

from __future__ import annotations

import torch


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every floating tensor drawn afresh from `seed`, not from the library's init (which changes
    between transformers releases), so every tensor is off any init and a wrong mapping shows:
    matrices ~ N(0, 1/fan_in), norm scales 1 + N(0, 0.2), other vectors N(0, 0.2), BN variances in
    [0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    norms = {n for n, m in model.named_modules() if "Norm" in type(m).__name__}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point() or name == "attn_mask_probs":
                continue
            noise = torch.randn(tensor.shape, generator=g)
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
            elif tensor.dim() >= 2:
                tensor.copy_(noise / tensor[0].numel() ** 0.5)
            elif name.endswith(".weight") and name.rsplit(".", 1)[0] in norms:
                tensor.copy_(1 + 0.2 * noise)
            else:
                tensor.copy_(0.2 * noise)
    return model.eval()
