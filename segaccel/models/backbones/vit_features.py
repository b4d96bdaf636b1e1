"""ViT-family encoders for `TimmBackbone`: block outputs as feature maps, through timm's own
`forward_intermediates`.

A ViT has no stages: `out_indices` are block indices (0-based, negative counts from the end) and
every level is `(N, C, H/p, W/p)` for patch size `p`. Any input size works: position embeddings are
interpolated to the input's patch grid (timm's `dynamic_img_size`), and an input whose sides are not
multiples of `p` is padded to the next multiple before the patch embedding, with zeros (the
normalised mean colour), at the bottom/right (`corner`, timm's `dynamic_img_pad` and MMSegmentation's
`PatchEmbed(padding="corner")`) or split evenly around the image (`center`, DINOv2's evaluation
`CenterPadding`). The padding is less than one patch, so no patch is all padding and the grid is
`(ceil(H/p), ceil(W/p))`: each map is exactly timm's `forward_intermediates` on the unpadded input
(with `dynamic_img_pad`). Prefix tokens (class, register/storage) are dropped from the maps; with
`with_cls_token` the class token is broadcast over the grid and concatenated after the patch
channels (`[patch, cls]`, `(N, 2C, H/p, W/p)`), as DINOv2/DINOv3 linear heads and DPT's readout use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

VIT_MODULES = ("vision_transformer", "vision_transformer_hybrid", "deit", "eva")
"""timm modules whose models come through `forward_intermediates` (ViT, DeiT, DINOv2, EVA, DINOv3...)."""

PATCH_PADDING = ("corner", "center")


def is_vit_model(timm_module: object, model_name: str) -> bool:
    """Whether `model_name` is one of timm's ViT-family models (see `VIT_MODULES`)."""
    return bool(timm_module.models.is_model_in_modules(model_name, VIT_MODULES))


def patch_stride(model: nn.Module) -> tuple[int, int]:
    """`(p_h, p_w)`: input pixels per feature cell (the patch size; the whole stem's stride for hybrids)."""
    ratio = model.patch_embed.feat_ratio()
    return (ratio, ratio) if isinstance(ratio, int) else (int(ratio[0]), int(ratio[1]))


def block_indices(model: nn.Module, out_indices: Sequence[int], key: str = "out_indices") -> list[int]:
    """`out_indices` as non-negative block indices, checked against the model's depth."""
    depth = len(model.blocks)
    indices = []
    for i in out_indices:
        if not isinstance(i, int) or not -depth <= i < depth:
            raise ValueError(f"TimmBackbone.{key}: block indices in [-{depth}, {depth - 1}], not {i!r}")
        indices.append(i % depth)
    if not indices:
        raise ValueError(f"TimmBackbone.{key}: at least one block index expected")
    return indices


def pad_to_patch(x: torch.Tensor, patch: tuple[int, int], mode: str = "corner") -> torch.Tensor:
    """`(N, C, H, W)` zero-padded to `(N, C, ceil(H/p_h) p_h, ceil(W/p_w) p_w)` (`corner` or `center`)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % patch[0], -w % patch[1]
    # no `return x` when both are 0: a branch on the size would make torch.export assume every input
    # a multiple of the patch (a guard the ONNX graph does not keep), so the pad is always there
    if mode == "corner":
        return F.pad(x, (0, pad_w, 0, pad_h))
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def vit_feature_maps(
    model: nn.Module,
    x: torch.Tensor,
    indices: Sequence[int],
    *,
    patch: tuple[int, int],
    padding: str = "corner",
    final_norm: bool = False,
    with_cls_token: bool = False,
) -> list[torch.Tensor]:
    """Image `(N, C, H, W)` → one `(N, D, ceil(H/p), ceil(W/p))` map per block index (`D` = embed dim,
    `2 D` with the class token concatenated)."""
    x = pad_to_patch(x, patch, padding)
    out = model.forward_intermediates(
        x,
        indices=list(indices),
        norm=final_norm,
        return_prefix_tokens=with_cls_token,
        output_fmt="NCHW",
        intermediates_only=True,
    )
    if not with_cls_token:
        return list(out)
    maps = []
    for patch_map, prefix in out:
        cls = prefix[:, 0, :, None, None].expand_as(patch_map)
        maps.append(torch.cat([patch_map, cls], dim=1))
    return maps


def has_class_token(model: nn.Module) -> bool:
    """Whether the ViT has a class token (the first prefix token when it does)."""
    return getattr(model, "cls_token", None) is not None


# --- freezing -------------------------------------------------------------------------------------
_STEM_PARAMETERS = ("cls_token", "reg_token", "pos_embed", "mask_token")
_STEM_MODULES = ("patch_embed", "pos_drop", "patch_drop", "norm_pre", "rope")


def vit_stem_and_blocks(model: nn.Module, num_blocks: int) -> tuple[list[nn.Parameter], list[nn.Module]]:
    """The parameters and modules of the stem (patch embedding, class/register tokens, position
    embedding) and of the first `num_blocks` blocks, for freezing."""
    params = [p for name in _STEM_PARAMETERS if isinstance(p := getattr(model, name, None), nn.Parameter)]
    modules = [m for name in _STEM_MODULES if isinstance(m := getattr(model, name, None), nn.Module)]
    modules += list(model.blocks[:num_blocks])
    return params, modules
