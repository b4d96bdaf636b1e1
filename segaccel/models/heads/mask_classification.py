"""What every mask-classification head shares (Mask2Former, EoMT): targets, losses and inference.

A mask-classification head predicts, per decoder layer, class scores `(N, Q, C + 1)` (the last class
is "no object") and mask logits `(N, Q, h, w)` for `Q` queries. Training builds one binary mask per
class present in each `gt_sem_seg` (the ignore label forms no mask) and applies the set-prediction
loss (`MaskClassificationLoss`) to every layer (deep supervision). Inference turns the last layer
into semantic logits `softmax(classes)[..., :-1] × sigmoid(masks)` summed over queries,
`(N, C, H, W)`: what `seg_logits` holds, so whole/slide inference, TTA, the metric and the Hub treat
these heads like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segaccel.registry import MODELS
from segaccel.structures import SegDataSample

DEFAULT_LOSS = {  # the paper's (and MMSegmentation's) weights and points; shared, never mutated
    "type": "MaskClassificationLoss",
    "class_weight": 2.0,
    "mask_weight": 5.0,
    "dice_weight": 5.0,
    "no_object_weight": 0.1,
    "num_points": 12544,
    "oversample_ratio": 3.0,
    "importance_sample_ratio": 0.75,
    "matcher": {
        "type": "HungarianMatcher", "cost_class": 2.0, "cost_mask": 5.0, "cost_dice": 5.0, "num_points": 12544
    },
}


def semantic_logits(cls_scores: torch.Tensor, mask_preds: torch.Tensor) -> torch.Tensor:
    """`Σ_q softmax(cls)[q, c] · sigmoid(mask)[q]`: `(N, Q, C + 1)`, `(N, Q, h, w)` → `(N, C, h, w)`."""
    probs = cls_scores.softmax(-1)[..., :-1]
    return torch.einsum("bqc,bqhw->bchw", probs, mask_preds.sigmoid())


class MaskClassificationHead(nn.Module):
    """Base of the mask-classification heads: targets, `loss_by_feat`, `predict_by_feat`.

    Subclasses build their network and implement `forward(inputs) -> (all_cls_scores, all_mask_preds)`,
    lists over layers, the last one being the final prediction.

    Args:
        num_classes: classes (without "no object").
        loss_decode: the `MaskClassificationLoss` config.
        ignore_index: label that forms no class mask.
        align_corners: of the final bilinear resize of the masks (False, as MMSegmentation).
    """

    def __init__(
        self,
        num_classes: int,
        loss_decode: dict[str, Any] = DEFAULT_LOSS,
        ignore_index: int = 255,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.out_channels = num_classes  # semantic logits: one channel per class
        self.threshold = None
        self.ignore_index = ignore_index
        self.align_corners = align_corners
        self.loss_decode = MODELS.build(loss_decode, key="decode_head.loss_decode")

    # --- training --------------------------------------------------------------------------------------
    def loss(self, inputs: Sequence[torch.Tensor], batch_data_samples: Sequence[SegDataSample]) -> dict:
        """Forward the features and compute every layer's losses."""
        all_cls_scores, all_mask_preds = self.forward(inputs)
        return self.loss_by_feat(all_cls_scores, all_mask_preds, batch_data_samples)

    def present_classes(
        self, batch_data_samples: Sequence[SegDataSample]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image: the classes present in `gt_sem_seg` `(G,)` (the ignore label left out) and the
        label map `(H, W)` whose masks `== class` are the targets."""
        labels, maps = [], []
        for i, sample in enumerate(batch_data_samples):
            if sample.get("gt_sem_seg") is None:
                raise ValueError(f"data_samples[{i}] has no gt_sem_seg; the loss needs labels")
            seg = sample.gt_sem_seg.data.squeeze(0).long()
            classes = torch.unique(seg)
            classes = classes[classes != self.ignore_index]
            bad = classes[(classes < 0) | (classes >= self.num_classes)]
            if bad.numel():
                raise ValueError(
                    f"data_samples[{i}]: gt_sem_seg holds label(s) {bad.tolist()}, outside "
                    f"0..{self.num_classes - 1} (num_classes={self.num_classes}) and not the ignore_index "
                    f"{self.ignore_index}"
                )
            labels.append(classes)
            maps.append(seg)
        return labels, maps

    def class_targets(
        self, batch_data_samples: Sequence[SegDataSample]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image: the classes present in `gt_sem_seg` `(G,)` and their binary masks `(G, H, W)`."""
        labels, maps = self.present_classes(batch_data_samples)
        return labels, [seg[None] == classes[:, None, None] for classes, seg in zip(labels, maps)]

    def loss_by_feat(
        self,
        all_cls_scores: Sequence[torch.Tensor],
        all_mask_preds: Sequence[torch.Tensor],
        batch_data_samples: Sequence[SegDataSample],
    ) -> dict[str, torch.Tensor]:
        """Losses of every layer: the last as `loss_cls`/`loss_mask`/`loss_dice`, layer `i` as `d{i}.*`.

        The target masks are read from the label maps at the loss's points (`sample_class_masks`),
        never built at full resolution.
        """
        labels, maps = self.present_classes(batch_data_samples)
        device = all_mask_preds[-1].device
        labels = [lab.to(device) for lab in labels]
        maps = [seg.to(device) for seg in maps]
        losses: dict[str, torch.Tensor] = {}
        last = len(all_cls_scores) - 1
        for i, (cls_scores, mask_preds) in enumerate(zip(all_cls_scores, all_mask_preds)):
            prefix = "" if i == last else f"d{i}."
            for name, value in self.loss_decode(cls_scores, mask_preds, labels, gt_sem_seg=maps).items():
                losses[prefix + name] = value
        return losses

    # --- inference ---------------------------------------------------------------------------------------
    def predict(
        self, inputs: Sequence[torch.Tensor], batch_img_metas: Sequence[dict[str, Any]]
    ) -> torch.Tensor:
        """Semantic logits `(N, C, H, W)` at the (padded) input size."""
        all_cls_scores, all_mask_preds = self.forward(inputs)
        return self.predict_by_feat(all_cls_scores, all_mask_preds, batch_img_metas)

    def predict_by_feat(
        self,
        all_cls_scores: Sequence[torch.Tensor],
        all_mask_preds: Sequence[torch.Tensor],
        batch_img_metas: Sequence[dict[str, Any]],
    ) -> torch.Tensor:
        """The last layer's masks resized to `pad_shape` (else `img_shape`), then `semantic_logits`."""
        meta = batch_img_metas[0]
        size = tuple(meta["pad_shape"] if "pad_shape" in meta else meta["img_shape"])[:2]
        masks = F.interpolate(
            all_mask_preds[-1], size=size, mode="bilinear", align_corners=self.align_corners
        )
        return semantic_logits(all_cls_scores[-1], masks)

    def forward_semantic(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Semantic logits `(N, C, h, w)` at the masks' own resolution (no resize): the `tensor` mode."""
        all_cls_scores, all_mask_preds = self.forward(inputs)
        return semantic_logits(all_cls_scores[-1], all_mask_preds[-1])

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}"
