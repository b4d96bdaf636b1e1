"""`EoMTHead`: Encoder-only Mask Transformer (Kerssies et al., CVPR 2025) on a ViT `TimmBackbone`.

EoMT has no decoder: `num_queries` learned query tokens are concatenated to the token sequence before
the ViT's last `num_blocks` blocks, so patches and queries attend to each other there. Before each of
those blocks (and after the last), the final norm is applied and the queries give class scores
(`class_head`) and masks (`mask_head(queries) · upscale(patch tokens)`, at 4x the patch grid for
16-pixel patches); each of these predictions is supervised. The masks also restrict the next block's
attention from the queries to the patches (masked attention, as Mask2Former's), and that masking is
annealed away during training: block `i`'s mask is applied to each query with probability
`attn_mask_probs[i]`, decayed from 1 to 0 between `mask_annealing_start_steps[i]` and
`mask_annealing_end_steps[i]` as `(1 - progress) ** power`, so the trained model needs no mask (and
no intermediate prediction) at inference.

The weights of the ViT stay in the backbone (`backbone.timm_model.*`: pretrained loading, freezing and
layer-wise decay as for any ViT); this head runs the backbone's ViT itself, with the queries, so the
`Segmentor` binds the backbone to it (`bind_backbone`) and hands it the image (`runs_backbone`).
The annealing is driven by the training loop's iteration (`set_train_progress`), so a resumed run
masks exactly as an uninterrupted one. Module names are EoMT's own (`q`, `class_head`, `mask_head`,
`upscale`). Training and inference otherwise: `MaskClassificationHead`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

from segaccel.models.backbones.vit_features import pad_to_patch
from segaccel.models.heads.mask_classification import DEFAULT_LOSS, MaskClassificationHead
from segaccel.models.utils import is_exporting


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an `(N, C, H, W)` map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ScaleBlock(nn.Module):
    """2x upsampling: transposed conv → GELU → depthwise 3x3 conv → LayerNorm2d (EoMT's `ScaleBlock`)."""

    def __init__(self, embed_dims: int) -> None:
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(embed_dims, embed_dims, kernel_size=2, stride=2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(
            embed_dims, embed_dims, kernel_size=3, padding=1, groups=embed_dims, bias=False
        )
        self.norm = LayerNorm2d(embed_dims, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, C, h, w)` → `(N, C, 2h, 2w)`."""
        return self.norm(self.conv2(self.act(self.conv1(x))))


def annealed_probability(iteration: int, start: int, end: int, power: float) -> float:
    """EoMT's masking probability: 1 before `start`, 0 from `end`, `(1 - progress) ** power` between."""
    if iteration < start:
        return 1.0
    if iteration >= end:
        return 0.0
    return (1.0 - (iteration - start) / (end - start)) ** power


def _read_probs_after_load(head: EoMTHead, _incompatible_keys: Any) -> None:
    head._block_probs()  # a module-level function (picklable), not a lambda


class EoMTHead(MaskClassificationHead):
    """EoMT's queries, predictions and masked attention on the backbone's last ViT blocks.

    Args:
        in_channels: the ViT's width (`embed_dim`).
        num_classes: classes (without "no object").
        num_queries: query tokens (100 for ADE20K semantic, 200 for COCO panoptic).
        num_blocks: last ViT blocks the queries join (4 for ViT-L, 3 for ViT-S/B in EoMT's configs).
        patch_size: the ViT's patch size (checked against the backbone).
        num_upscale_blocks: 2x upsamplings of the patch grid for the masks; None: EoMT's
            `max(1, log2(patch_size) - 2)` (2 for 16-pixel patches: masks at 1/4).
        masked_attn_enabled: predict and mask before each of the last blocks (EoMT's default); False
            predicts only after the last block, with plain attention.
        mask_annealing_start_steps, mask_annealing_end_steps: per block, the iterations between which its
            masking probability decays from 1 to 0 (ints; or fractions of `max_iters` in (0, 1]); None:
            no annealing (the probabilities stay as they are, 1 for a new model).
        mask_annealing_power: the decay's exponent (EoMT's `poly_power`, 0.9).
        loss_decode, ignore_index, align_corners: see `MaskClassificationHead`.
    """

    runs_backbone = True  # the Segmentor hands this head the image; it runs the bound backbone itself

    def __init__(
        self,
        in_channels: int,
        *,
        num_classes: int,
        num_queries: int = 100,
        num_blocks: int = 4,
        patch_size: int = 16,
        num_upscale_blocks: int | None = None,
        masked_attn_enabled: bool = True,
        mask_annealing_start_steps: Sequence[float] | None = None,
        mask_annealing_end_steps: Sequence[float] | None = None,
        mask_annealing_power: float = 0.9,
        loss_decode: dict[str, Any] = DEFAULT_LOSS,
        ignore_index: int = 255,
        align_corners: bool = False,
        init_cfg: None = None,
    ) -> None:
        super().__init__(
            num_classes, loss_decode=loss_decode, ignore_index=ignore_index, align_corners=align_corners
        )
        if num_blocks < 1:
            raise ValueError(f"EoMTHead: num_blocks must be at least 1, got {num_blocks}")
        starts, ends = mask_annealing_start_steps, mask_annealing_end_steps
        if (starts is None) != (ends is None):
            raise ValueError("EoMTHead: give both mask_annealing_start_steps and _end_steps, or neither")
        if starts is not None and not (len(starts) == len(ends) == num_blocks):
            raise ValueError(
                f"EoMTHead: mask_annealing_start_steps {list(starts)} and mask_annealing_end_steps "
                f"{list(ends)} need one entry per block (num_blocks={num_blocks})"
            )
        if starts is not None and any(e <= s for s, e in zip(starts, ends)):
            raise ValueError(
                f"EoMTHead: each annealing end must come after its start, got {list(starts)}, {list(ends)}"
            )
        self.in_channels = in_channels
        self.num_queries = num_queries
        self.num_blocks = num_blocks
        self.patch_size = patch_size
        self.masked_attn_enabled = masked_attn_enabled
        self.mask_annealing = None
        if starts is not None:
            self.mask_annealing = (list(starts), list(ends), float(mask_annealing_power))
        if num_upscale_blocks is None:
            num_upscale_blocks = max(1, int(math.log2(patch_size)) - 2)
        self.q = nn.Embedding(num_queries, in_channels)
        self.class_head = nn.Linear(in_channels, num_classes + 1)
        self.mask_head = nn.Sequential(
            nn.Linear(in_channels, in_channels), nn.GELU(),
            nn.Linear(in_channels, in_channels), nn.GELU(),
            nn.Linear(in_channels, in_channels),
        )
        self.upscale = nn.Sequential(*[ScaleBlock(in_channels) for _ in range(num_upscale_blocks)])
        self.register_buffer("attn_mask_probs", torch.ones(num_blocks))
        self._probs_read = [1.0] * num_blocks  # attn_mask_probs as last read (see `_block_probs`)
        self.register_load_state_dict_post_hook(_read_probs_after_load)
        self._backbone: list[nn.Module] = []  # the bound backbone, kept out of this module's children

    # --- the backbone ----------------------------------------------------------------------------------
    def bind_backbone(self, backbone: nn.Module) -> None:
        """Remember the `TimmBackbone` whose ViT this head runs (not registered: its weights stay there)."""
        vit = getattr(backbone, "timm_model", None)
        if not getattr(backbone, "is_vit", False) or vit is None or not hasattr(vit, "_pos_embed"):
            raise ValueError(
                "EoMTHead needs a ViT TimmBackbone (timm's VisionTransformer family, e.g. "
                f"vit_large_patch14_reg4_dinov2), got {type(backbone).__name__}"
            )
        if getattr(vit, "rope", None) is not None:
            raise ValueError(f"EoMTHead: {backbone.model_name} uses rotary position embeddings (unsupported)")
        depth = len(vit.blocks)
        keeps_all = getattr(backbone, "out_indices", [depth - 1])[-1] == depth - 1
        if not keeps_all or not getattr(backbone, "final_norm", False):
            raise ValueError(
                "EoMTHead: the backbone must keep every block and its final norm: set out_indices: [-1] "
                "and final_norm: true"
            )
        if self.num_blocks > depth:
            raise ValueError(f"EoMTHead: num_blocks {self.num_blocks} > the backbone's {depth} blocks")
        if int(vit.embed_dim) != self.in_channels:
            raise ValueError(f"EoMTHead: in_channels {self.in_channels} != backbone width {vit.embed_dim}")
        if tuple(backbone.patch_size) != (self.patch_size, self.patch_size):
            raise ValueError(f"EoMTHead: patch_size {self.patch_size} != backbone's {backbone.patch_size}")
        self._backbone[:] = [backbone]

    @property
    def backbone(self) -> nn.Module:
        if not self._backbone:
            raise RuntimeError("EoMTHead runs a ViT backbone: build it inside a Segmentor (bind_backbone)")
        return self._backbone[0]

    # --- training progress -----------------------------------------------------------------------------
    def set_train_progress(self, iteration: int, max_iters: int) -> None:
        """Set each block's masking probability for the optimizer step `iteration` (0-based)."""
        if self.mask_annealing is None:
            return
        starts, ends, power = self.mask_annealing

        def step(value: float) -> float:
            return value * max_iters if isinstance(value, float) and 0 < value <= 1 else value

        probs = [annealed_probability(iteration, step(s), step(e), power) for s, e in zip(starts, ends)]
        self.attn_mask_probs.copy_(torch.tensor(probs, dtype=self.attn_mask_probs.dtype))
        self._block_probs()

    def _block_probs(self) -> list[float]:
        """Each joined block's masking probability as Python floats, for the inference branches (mask or
        not): read from `attn_mask_probs`, except under torch.export, whose buffers are symbolic (no
        value to branch on); there the values last read (on load, on `set_train_progress`, by every
        eager forward) decide, so a model exports as it last ran."""
        if not is_exporting():
            self._probs_read = [float(p) for p in self.attn_mask_probs.tolist()]
        return self._probs_read

    # --- forward ---------------------------------------------------------------------------------------
    def _predict(
        self, tokens: torch.Tensor, grid: tuple[int, int], num_prefix: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised tokens `(N, Q + prefix + h*w, C)` → mask logits `(N, Q, s*h, s*w)`, class scores."""
        queries = tokens[:, : self.num_queries]
        patches = tokens[:, self.num_queries + num_prefix :].transpose(1, 2)
        patches = patches.reshape(tokens.shape[0], -1, *grid)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_head(queries), self.upscale(patches))
        return masks, self.class_head(queries)

    def _attn_mask(
        self, tokens: torch.Tensor, mask_logits: torch.Tensor, prob: torch.Tensor, grid: tuple[int, int],
        num_prefix: int, always: bool | None = None,
    ) -> torch.Tensor:
        """Boolean `(N, 1, T, T)` attention mask (True = attend): queries see only the patches where their
        mask (resized to the grid) is on; each query is freed of it with probability `1 - prob`
        (`always`: whether `prob` is 1, when the caller knows it without reading the tensor)."""
        n, t = tokens.shape[:2]
        start = self.num_queries + num_prefix
        mask = torch.ones(n, t, t, dtype=torch.bool, device=tokens.device)
        on = F.interpolate(mask_logits, size=grid, mode="bilinear", align_corners=False).flatten(2) > 0
        mask[:, : self.num_queries, start:] = on
        if not (always if always is not None else bool(prob >= 1)):
            free = torch.rand(n, self.num_queries, device=tokens.device) > prob
            mask[:, : self.num_queries, start:][free] = True
        return mask[:, None]

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """`[image (N, 3, H, W)]` → per prediction (before each of the last blocks when masking, and after
        the last): class scores `(N, Q, C + 1)` and mask logits `(N, Q, s*H/p, s*W/p)`."""
        backbone = self.backbone
        vit = backbone.timm_model
        x = pad_to_patch(inputs[0], backbone.patch_size, backbone.patch_padding)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        num_prefix = int(vit.num_prefix_tokens)
        first = len(vit.blocks) - self.num_blocks
        checkpointing = self.training and getattr(vit, "grad_checkpointing", False)
        probs = None if self.training else self._block_probs()  # no read (no sync) in training
        all_cls, all_masks = [], []
        for i, block in enumerate(vit.blocks):
            mask = None
            if i == first:
                queries = self.q.weight.unsqueeze(0).repeat(x.shape[0], 1, 1).to(x.dtype)
                x = torch.cat([queries, x], dim=1)
            if i >= first and self.masked_attn_enabled:
                prob = self.attn_mask_probs[i - first]
                if probs is None or probs[i - first] > 0:
                    masks, cls = self._predict(vit.norm(x), grid, num_prefix)
                    all_masks.append(masks)
                    all_cls.append(cls)
                    always = None if probs is None else probs[i - first] >= 1
                    mask = self._attn_mask(x, masks, prob, grid, num_prefix, always)
            if checkpointing:
                x = cp.checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, attn_mask=mask)
        masks, cls = self._predict(vit.norm(x), grid, num_prefix)
        all_masks.append(masks)
        all_cls.append(cls)
        return all_cls, all_masks

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_queries={self.num_queries}, num_blocks={self.num_blocks}"
