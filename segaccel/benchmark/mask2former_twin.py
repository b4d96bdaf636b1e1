"""transformers' twin of a Mask2Former config for `scripts/benchmark.py train|infer --vs transformers`.

`build_twins(cfg)` builds transformers' `Mask2FormerForUniversalSegmentation` with the config's head
(channels, queries, layers, losses and points) on a ResNet-50 backbone (transformers' ResNet; the
config's own backbone must be a ResNet-50), random init, and ours from it through the converter
(`segaccel.convert.mask2former`): the same architecture with the same weights (ours on timm's ResNet-50,
the same network as transformers' and MMSegmentation's `ResNet`, depth 50). Nothing is downloaded.
Preprocessing is the same uint8 → float normalisation done in torch for both; transformers gets its
targets as it wants them (one binary mask per class present, `mask_labels`/`class_labels`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


def is_mask2former(cfg: dict[str, Any]) -> bool:
    return cfg.get("decode_head", {}).get("type") == "Mask2FormerHead"


def transformers_config(cfg: dict[str, Any]) -> Any:
    """transformers' `Mask2FormerConfig` with our config's head on a ResNet-50."""
    from transformers import Mask2FormerConfig, ResNetConfig

    head = cfg["decode_head"]
    backbone = cfg["backbone"]
    depth = backbone.get("depth") or {"resnet50": 50}.get(backbone.get("model_name"))
    if depth != 50:
        raise SystemExit("--vs transformers: Mask2Former configs on a ResNet-50 backbone only")
    pixel = head["pixel_decoder"]["encoder"]
    decoder = head["transformer_decoder"]
    attn = pixel["layer_cfg"]["self_attn_cfg"]
    loss = head["loss_decode"]
    num_classes = int(head["num_classes"])
    return Mask2FormerConfig(
        backbone_config=ResNetConfig(
            depths=[3, 4, 6, 3],
            hidden_sizes=[256, 512, 1024, 2048],
            out_features=["stage1", "stage2", "stage3", "stage4"],
        ),
        feature_size=int(head["feat_channels"]),
        mask_feature_size=int(head["out_channels"]),
        hidden_dim=int(decoder["layer_cfg"]["self_attn_cfg"]["embed_dims"]),
        encoder_feedforward_dim=int(pixel["layer_cfg"]["ffn_cfg"]["feedforward_channels"]),
        dim_feedforward=int(decoder["layer_cfg"]["ffn_cfg"]["feedforward_channels"]),
        encoder_layers=int(pixel["num_layers"]),
        decoder_layers=int(decoder["num_layers"]) + 1,
        num_attention_heads=int(attn["num_heads"]),
        num_queries=int(head["num_queries"]),
        num_labels=num_classes,
        id2label={i: str(i) for i in range(num_classes)},
        label2id={str(i): i for i in range(num_classes)},
        no_object_weight=float(loss["no_object_weight"]),
        class_weight=float(loss["class_weight"]),
        mask_weight=float(loss["mask_weight"]),
        dice_weight=float(loss["dice_weight"]),
        train_num_points=int(loss["num_points"]),
        oversample_ratio=float(loss["oversample_ratio"]),
        importance_sample_ratio=float(loss["importance_sample_ratio"]),
        ignore_value=int(head.get("ignore_index", 255)),
    )


def build_twins(cfg: dict[str, Any]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, transformers'): the same Mask2Former R50 with the same (random) weights."""
    try:
        from transformers import Mask2FormerForUniversalSegmentation
    except ImportError as exc:  # pragma: no cover - optional benchmark dependency
        raise SystemExit("--vs transformers needs `pip install transformers`") from exc
    import segaccel.models  # noqa: F401  (registers the parts)
    from segaccel.convert.mask2former import (
        mask2former_config_from_transformers,
        mask2former_state_dict_from_transformers,
    )
    from segaccel.models import Segmentor

    theirs = Mask2FormerForUniversalSegmentation(transformers_config(cfg))
    config = theirs.config.to_dict()
    ours_cfg = mask2former_config_from_transformers(config)
    ours_cfg["data_preprocessor"] = {**(cfg.get("data_preprocessor") or {}), "type": "SegDataPreProcessor"}
    ours = Segmentor(**ours_cfg)
    ours.load_weights(mask2former_state_dict_from_transformers(theirs.state_dict(), config), strict=True)
    return ours, theirs


def class_targets(labels: torch.Tensor, ignore_index: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """transformers' targets of `(N, H, W)` labels: per image, one binary mask per class present."""
    masks, classes = [], []
    for label in labels:
        present = torch.unique(label)
        present = present[present != ignore_index]
        masks.append((label[None] == present[:, None, None]).float())
        classes.append(present)
    return masks, classes


def transformers_step(
    model: torch.nn.Module, mean: list[float], std: list[float], device: torch.device, channels_last: bool,
    ignore_index: int = 255,
) -> Callable[[dict[str, Any]], torch.Tensor]:
    """transformers' training forward with the same preprocessing as ours (uint8 → normalised on device)."""
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def forward(batch: dict[str, Any]) -> torch.Tensor:
        pixels = torch.stack(batch["inputs"]).to(device).float().sub_(mean_t).div_(std_t)
        if channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        labels = torch.stack([s.gt_sem_seg.data[0] for s in batch["data_samples"]]).to(device)
        masks, classes = class_targets(labels, ignore_index)
        return model(pixel_values=pixels, mask_labels=masks, class_labels=classes).loss

    return forward


def transformers_encode(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Semantic logits at the input size from transformers' outputs, computed as ours are."""

    def encode(x: torch.Tensor) -> torch.Tensor:
        out = model(pixel_values=x)
        masks = F.interpolate(
            out.masks_queries_logits, size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        probs = out.class_queries_logits.softmax(-1)[..., :-1]
        return torch.einsum("bqc,bqhw->bchw", probs, masks.sigmoid())

    return encode
