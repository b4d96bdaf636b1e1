"""`TimmBackbone`: any timm encoder — CNNs through `features_only`, ViTs through `forward_intermediates`.

timm (the `segaccel[timm]` extra) brings ResNets (`resnet50c`/`resnet101c` have MMSegmentation's
ResNet-V1c layout: a deep 3-conv stem, no average-pool shortcut, dilation contracted in the first
block of a dilated stage), ConvNeXt, Swin and hundreds more, and the ViT family (plain/AugReg ViT,
DeiT, DINOv2 with and without registers, EVA, DINOv3), with weights on the Hub. For ViTs
`out_indices` are block indices and every level is `(N, C, H/p, W/p)` at any input size (see
`vit_features`).

`pretrained` accepts what a config can hold:
- `None`/`False`: random init; `True`: the model's default timm weights from the Hub;
- a Hub id (`timm/resnet50c.gluon_in1k`): that repo's weights for the architecture `model_name`;
- a local file (`.safetensors`, or a `.pth`/`.bin` read with `torch.load(weights_only=True)`).
Downloads and loading are timm's own (safetensors first; `.bin` files only with `weights_only=True`).
A saved segmentor never points at these weights again (`Segmentor` drops `pretrained` when saving);
their licence stays, as `weights_license` (timm's pretrained config says it: DINOv3 weights are under
`dinov3-license`), so a model card made later still names it.

Training controls for big backbones: `frozen` (no gradients, so not in the optimizer, and eval-mode
behaviour — dropout, drop path, BatchNorm statistics — kept while the rest trains), `frozen_stages`
(the stem and the first stages/blocks) and `with_cp` (timm's activation checkpointing: less memory,
the same gradients).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segaccel.models.backbones import vit_features as vit


def _import_timm() -> Any:
    try:
        import timm
    except ImportError as exc:  # timm, or torchvision that timm imports, is missing
        raise ImportError(
            f"TimmBackbone needs timm (and the torchvision that matches torch): pip install 'segaccel[timm]' "
            f"({exc})"
        ) from exc
    return timm


class TimmBackbone(nn.Module):
    """A timm encoder: image `(N, C, H, W)` → feature maps `[(N, C_i, H/r_i, W/r_i)]`, channels first.

    Args:
        model_name: timm architecture name (e.g. `resnet50c`, `convnext_tiny`,
            `swin_tiny_patch4_window7_224`, `vit_small_patch14_reg4_dinov2`, `vit_small_patch16_dinov3`).
        pretrained: see the module docstring.
        out_indices: which feature levels to return. CNNs: timm's indices (for ResNets 0 is the stem
            at stride 2, 1..4 are `layer1`..`layer4`, i.e. MMSegmentation's `out_indices=(0, 1, 2, 3)`).
            ViTs: block indices (e.g. `[8, 9, 10, 11]`, or `[-1]` for the last block).
        output_stride: 8 or 16 dilates the last stages (ResNet-style models only); None keeps 32.
        in_channels: image channels.
        drop_path_rate: stochastic depth, for the models that have it.
        model_kwargs: further `timm.create_model` arguments (e.g. `{strict_img_size: false}` for
            Swin at other sizes than it was trained, `{img_size: 512}` for a ViT whose position
            embedding is to be learnt at that grid, `{depth: 2}` for a shallow test model).
        with_cls_token: ViTs: concatenate the class token to every level (`[patch, cls]`, `2C` channels).
        final_norm: ViTs: apply the model's final norm to every level (DINOv2's
            `get_intermediate_layers(norm=True)`, DINOv3's `use_backbone_norm`).
        patch_padding: ViTs: where inputs not divisible by the patch are padded, `corner`
            (bottom/right) or `center` (DINOv2's evaluation).
        frozen: no gradients for any backbone parameter, and the backbone kept in eval mode.
        frozen_stages: -1 freezes nothing; 0 the stem (ViTs: patch embedding, class/register tokens,
            position embedding; CNNs: the layers before the first stride-4 level, e.g. ResNet's deep
            stem); k > 0 also the first k stages (ViTs: blocks 0..k-1; CNNs: the first k levels of
            stride 4 or more, e.g. ResNet `layer1`..`layer<k>`, ConvNeXt `stages.0`..`stages.<k-1>`).
            Frozen parts get no gradients and stay in eval mode.
        with_cp: activation checkpointing (timm's `set_grad_checkpointing`; MMSegmentation's name).
        weights_license: the licence of the weights this backbone was initialised from; None works it
            out from timm's pretrained config when `pretrained` is set (saved models carry it here).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool | str | None = None,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        output_stride: int | None = None,
        in_channels: int = 3,
        drop_path_rate: float | None = None,
        model_kwargs: dict[str, Any] | None = None,
        with_cls_token: bool = False,
        final_norm: bool = False,
        patch_padding: str = "corner",
        frozen: bool = False,
        frozen_stages: int = -1,
        with_cp: bool = False,
        weights_license: str | None = None,
    ) -> None:
        super().__init__()
        timm = _import_timm()
        if not isinstance(model_name, str) or not timm.is_model(model_name):
            raise ValueError(
                f"TimmBackbone: {model_name!r} is not a timm model name (see timm.list_models())"
            )
        if output_stride not in (None, 8, 16, 32):
            raise ValueError(f"TimmBackbone: output_stride must be None, 8, 16 or 32, got {output_stride!r}")
        if patch_padding not in vit.PATCH_PADDING:
            raise ValueError(f"TimmBackbone.patch_padding: one of {vit.PATCH_PADDING}, got {patch_padding!r}")
        if not isinstance(frozen_stages, int) or frozen_stages < -1:
            raise ValueError(f"TimmBackbone.frozen_stages: -1 or a stage count, got {frozen_stages!r}")
        self.model_name = model_name
        self.pretrained = pretrained
        self.is_vit = vit.is_vit_model(timm, model_name)
        if not self.is_vit and (with_cls_token or final_norm):
            raise ValueError(
                f"TimmBackbone: with_cls_token and final_norm are for ViT-family models, not {model_name}"
            )

        kwargs: dict[str, Any] = dict(model_kwargs or {})
        kwargs["in_chans"] = in_channels
        if self.is_vit:
            if output_stride is not None:
                raise ValueError(f"TimmBackbone: output_stride is not supported by ViT {model_name}")
            kwargs.setdefault("dynamic_img_size", True)  # position embeddings follow the input size
        else:
            kwargs.update(features_only=True, out_indices=tuple(out_indices))
            if output_stride is not None:
                kwargs["output_stride"] = output_stride
        if drop_path_rate is not None:
            kwargs["drop_path_rate"] = drop_path_rate
        if isinstance(pretrained, str):
            if os.path.isfile(pretrained):
                kwargs["pretrained_cfg_overlay"] = {"file": pretrained}
            else:
                repo_id = pretrained.removeprefix("hf-hub:")
                kwargs["pretrained_cfg_overlay"] = {"hf_hub_id": repo_id, "source": "hf-hub"}
        try:
            self.timm_model = timm.create_model(model_name, pretrained=bool(pretrained), **kwargs)
        except TypeError as exc:  # an argument this architecture does not take
            raise ValueError(f"TimmBackbone({model_name}): {exc}") from exc
        self.weights_license = weights_license or (_weights_license(timm, self) if pretrained else None)

        if self.is_vit:
            self._init_vit(out_indices, with_cls_token, final_norm, patch_padding)
        else:
            info = self.timm_model.feature_info
            self.out_channels = tuple(info.channels())
            self.reductions = tuple(info.reduction())
            self.channels_last_output = str(getattr(self.timm_model, "output_fmt", "NCHW")).endswith("NHWC")

        self.frozen = bool(frozen)
        self.frozen_stages = frozen_stages
        self._frozen_modules: list[str] = []  # names: SyncBN conversion may replace the modules
        self._freeze()
        self.with_cp = bool(with_cp)
        if self.with_cp:
            self.timm_model.set_grad_checkpointing(True)
        # The blocks FSDP shards as one unit each (Accelerate's TRANSFORMER_BASED_WRAP reads this):
        # the classes of timm's `blocks` (ViT `Block`, EVA `EvaBlock`, ...) or stages.
        units = getattr(self.timm_model, "blocks", None) or getattr(self.timm_model, "stages", None) or []
        self._no_split_modules = sorted({type(m).__name__ for m in units})

    def _init_vit(
        self, out_indices: Sequence[int], with_cls_token: bool, final_norm: bool, patch_padding: str
    ) -> None:
        model = self.timm_model
        if with_cls_token and not vit.has_class_token(model):
            raise ValueError(f"TimmBackbone.with_cls_token: {self.model_name} has no class token")
        self.out_indices = vit.block_indices(model, out_indices)
        self.with_cls_token = with_cls_token
        self.final_norm = final_norm
        self.patch_padding = patch_padding
        self.patch_size = vit.patch_stride(model)
        self.embed_dim = int(model.embed_dim)
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        # the classifier, blocks after the last one used and (unless used) the final norm never run
        model.prune_intermediate_layers(self.out_indices, prune_norm=not final_norm, prune_head=True)
        channels = self.embed_dim * (2 if with_cls_token else 1)
        self.out_channels = (channels,) * len(self.out_indices)
        self.reductions = (self.patch_size[0],) * len(self.out_indices)
        self.channels_last_output = False

    # --- freezing --------------------------------------------------------------------------------
    def _freeze(self) -> None:
        """Turn off gradients of the frozen parts and remember their modules (kept in eval mode)."""
        if self.frozen:
            params, modules = list(self.timm_model.parameters()), [self.timm_model]
        elif self.frozen_stages < 0:
            return
        elif self.is_vit:
            if self.frozen_stages > len(self.timm_model.blocks):
                raise ValueError(
                    f"TimmBackbone.frozen_stages: {self.frozen_stages} blocks asked, the model keeps "
                    f"{len(self.timm_model.blocks)}"
                )
            params, modules = vit.vit_stem_and_blocks(self.timm_model, self.frozen_stages)
            params += [p for m in modules for p in m.parameters()]
        else:
            modules = _cnn_stem_and_stages(self.timm_model, self.frozen_stages)
            params = [p for m in modules for p in m.parameters()]
        for param in params:
            param.requires_grad_(False)
        names = {id(m): name for name, m in self.named_modules()}
        self._frozen_modules = [names[id(m)] for m in modules]
        self.train(self.training)

    def train(self, mode: bool = True) -> TimmBackbone:
        """`nn.Module.train`, but frozen parts stay in eval mode."""
        super().train(mode)
        for name in self._frozen_modules:
            self.get_submodule(name).eval()
        return self

    # --- forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """`(N, C, H, W)` → one `(N, C_i, h_i, w_i)` map per `out_indices` entry."""
        if self.is_vit:
            return vit.vit_feature_maps(
                self.timm_model,
                x,
                self.out_indices,
                patch=self.patch_size,
                padding=self.patch_padding,
                final_norm=self.final_norm,
                with_cls_token=self.with_cls_token,
            )
        feats = self.timm_model(x)
        if self.channels_last_output:  # e.g. Swin: timm gives (N, h, w, C)
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        return list(feats)

    def extra_repr(self) -> str:
        text = f"model_name={self.model_name!r}, out_channels={self.out_channels}"
        text += f", reductions={self.reductions}"
        if self.frozen:
            text += ", frozen=True"
        elif self.frozen_stages >= 0:
            text += f", frozen_stages={self.frozen_stages}"
        return text


def _cnn_stem_and_stages(model: nn.Module, num_stages: int) -> list[nn.Module]:
    """The modules of a timm `features_only` model up to the end of its `num_stages`-th stage (levels
    of stride 4 or more; the stem is everything before the first of them)."""
    levels = [info for info in model.feature_info.info if info["reduction"] >= 4]
    if num_stages > len(levels):
        raise ValueError(f"TimmBackbone.frozen_stages: {num_stages} stages asked, there are {len(levels)}")
    names = list(dict(model.named_children()))
    if num_stages == 0:
        first = levels[0]["module"].replace(".", "_")
        end = names.index(first) if first in names else 0
    else:
        last = levels[num_stages - 1]["module"].replace(".", "_")
        if last not in names:
            raise ValueError(f"TimmBackbone.frozen_stages: stage {num_stages} is not kept (see out_indices)")
        end = names.index(last) + 1
    return [getattr(model, name) for name in names[:end]]


def _weights_license(timm: Any, backbone: TimmBackbone) -> str | None:
    """The licence timm records for the weights `pretrained` names (a Hub id `timm/<arch>.<tag>` that
    timm knows: that tag's; otherwise the model's own pretrained config's)."""
    pretrained = backbone.pretrained
    if isinstance(pretrained, str) and not os.path.isfile(pretrained):
        try:
            known = timm.models.get_pretrained_cfg(pretrained.removeprefix("hf-hub:").split("/")[-1])
        except RuntimeError:  # `<arch>.<tag>` with a tag timm does not know
            known = None
        if known is not None and getattr(known, "license", None):
            return known.license
    cfg = getattr(backbone.timm_model, "pretrained_cfg", None) or {}
    return cfg.get("license")
