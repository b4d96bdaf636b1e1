"""`BaseDecodeHead`: what every decode head shares, as in MMSegmentation 1.x `decode_head.py`.

A head turns backbone features into logits `(N, out_channels, h, w)` (`forward`), computes its losses
against the batch's labels (`loss` → `loss_by_feat`) and resizes logits for inference (`predict` →
`predict_by_feat`). Subclasses implement `forward` and end it with `cls_seg`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segaccel.models.losses.accuracy import accuracy, label_accuracy
from segaccel.models.utils import resize
from segaccel.registry import MODELS
from segaccel.structures import SegDataSample

# shared defaults; never mutated (the registry deep-copies configs before building)
_RELU = {"type": "ReLU"}
_DEFAULT_LOSS = {"type": "CrossEntropyLoss", "use_sigmoid": False, "loss_weight": 1.0}
_INPUT_TRANSFORMS = (None, "resize_concat", "multiple_select")


class BaseDecodeHead(nn.Module):
    """Base of the decode heads.

    Args:
        in_channels: channels of the selected input (a list for `resize_concat`/`multiple_select`).
        channels: channels of the last feature map, before the classifier `conv_seg`.
        num_classes: number of classes.
        out_channels: classifier outputs; None means `num_classes`. 1 is binary segmentation
            (`num_classes=2`, a sigmoid `threshold`, default 0.3, decides the foreground).
        threshold: sigmoid threshold for `out_channels=1`.
        dropout_ratio: `Dropout2d` before the classifier.
        conv_cfg, norm_cfg, act_cfg: configs for the ConvModules a subclass builds.
        in_index: which backbone output(s) to use.
        input_transform: None (one map), `"resize_concat"` (resize all to the first one's size and
            concatenate channels) or `"multiple_select"` (a list of maps).
        loss_decode: a loss config or a list of them (built through `MODELS`); losses with the same
            `loss_name` are summed.
        ignore_index: label ignored by the losses and the accuracy.
        sampler: a pixel sampler config (`{type: OHEMPixelSampler, thresh, min_kept}`), built with this
            head as its `context`; its 0/1 pixel weights go to every loss as `weight=`.
        align_corners: `align_corners` of every bilinear resize in the head.
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        channels: int,
        *,
        num_classes: int,
        out_channels: int | None = None,
        threshold: float | None = None,
        dropout_ratio: float = 0.1,
        conv_cfg: dict[str, Any] | None = None,
        norm_cfg: dict[str, Any] | None = None,
        act_cfg: dict[str, Any] | None = _RELU,
        in_index: int | Sequence[int] = -1,
        input_transform: str | None = None,
        loss_decode: dict[str, Any] | Sequence[dict[str, Any]] = _DEFAULT_LOSS,
        ignore_index: int = 255,
        sampler: dict[str, Any] | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self._init_inputs(in_channels, in_index, input_transform)
        self.channels = channels
        self.dropout_ratio = dropout_ratio
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.act_cfg = act_cfg
        self.ignore_index = ignore_index
        self.align_corners = align_corners

        if out_channels is None:
            out_channels = num_classes
        if out_channels != num_classes and out_channels != 1:
            raise ValueError(
                f"out_channels must equal num_classes, or be 1 for binary segmentation (num_classes=2); "
                f"got out_channels={out_channels}, num_classes={num_classes}"
            )
        if out_channels == 1 and threshold is None:
            threshold = 0.3
            warnings.warn(
                "threshold is not set for binary segmentation (out_channels=1); using 0.3", stacklevel=2
            )
        self.num_classes = num_classes
        self.out_channels = out_channels
        self.threshold = threshold

        if isinstance(loss_decode, dict):
            self.loss_decode = MODELS.build(loss_decode, key="decode_head.loss_decode")
        elif isinstance(loss_decode, (list, tuple)):
            self.loss_decode = nn.ModuleList(
                MODELS.build(cfg, key=f"decode_head.loss_decode[{i}]") for i, cfg in enumerate(loss_decode)
            )
        else:
            raise TypeError(
                f"loss_decode must be a dict or a list of dicts, got {type(loss_decode).__name__}"
            )

        self.sampler = None
        if sampler is not None:
            self.sampler = MODELS.build(sampler, key="decode_head.sampler", context=self)

        self.conv_seg = nn.Conv2d(channels, self.out_channels, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def _init_inputs(
        self, in_channels: int | Sequence[int], in_index: int | Sequence[int], input_transform: str | None
    ) -> None:
        """Check that `in_channels`, `in_index` and `input_transform` agree; set `self.in_channels`."""
        if input_transform not in _INPUT_TRANSFORMS:
            raise ValueError(f"input_transform must be one of {_INPUT_TRANSFORMS}, got {input_transform!r}")
        self.input_transform = input_transform
        if input_transform is None:
            if not isinstance(in_channels, int) or not isinstance(in_index, int):
                raise ValueError(
                    "with input_transform=None, in_channels and in_index must be single ints, got "
                    f"in_channels={in_channels!r}, in_index={in_index!r}"
                )
            self.in_channels = in_channels
            self.in_index = in_index
            return
        if not isinstance(in_channels, (list, tuple)) or not isinstance(in_index, (list, tuple)):
            raise ValueError(
                f"with input_transform={input_transform!r}, in_channels and in_index must be lists, got "
                f"in_channels={in_channels!r}, in_index={in_index!r}"
            )
        if len(in_channels) != len(in_index):
            raise ValueError(
                f"in_channels {list(in_channels)} and in_index {list(in_index)} differ in length"
            )
        self.in_index = list(in_index)
        self.in_channels = sum(in_channels) if input_transform == "resize_concat" else list(in_channels)

    def extra_repr(self) -> str:
        return (
            f"input_transform={self.input_transform}, ignore_index={self.ignore_index}, "
            f"align_corners={self.align_corners}"
        )

    # --- forward -------------------------------------------------------------------------------------
    def _transform_inputs(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """Select (and for `resize_concat`, resize and concatenate) the head's input features."""
        if self.input_transform == "resize_concat":
            selected = [inputs[i] for i in self.in_index]
            size = selected[0].shape[2:]
            return torch.cat(
                [resize(x, size=size, mode="bilinear", align_corners=self.align_corners) for x in selected],
                dim=1,
            )
        if self.input_transform == "multiple_select":
            return [inputs[i] for i in self.in_index]
        return inputs[self.in_index]

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Features → logits `(N, out_channels, h, w)`."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def cls_seg(self, feat: torch.Tensor) -> torch.Tensor:
        """Dropout, then the 1x1 classifier: `(N, channels, h, w)` → `(N, out_channels, h, w)`."""
        if self.dropout is not None:
            feat = self.dropout(feat)
        return self.conv_seg(feat)

    # --- training ------------------------------------------------------------------------------------
    def loss(
        self, inputs: Sequence[torch.Tensor], batch_data_samples: Sequence[SegDataSample]
    ) -> dict[str, torch.Tensor]:
        """Forward the features and compute the losses against the samples' `gt_sem_seg`."""
        return self.loss_by_feat(self.forward(inputs), batch_data_samples)

    def _stack_batch_gt(self, batch_data_samples: Sequence[SegDataSample]) -> torch.Tensor:
        """The samples' `gt_sem_seg` stacked to `(N, 1, H, W)`."""
        labels = []
        for i, sample in enumerate(batch_data_samples):
            if sample.get("gt_sem_seg") is None:
                raise ValueError(f"data_samples[{i}] has no gt_sem_seg; the loss needs labels")
            labels.append(sample.gt_sem_seg.data)
        shapes = {tuple(label.shape) for label in labels}
        if len(shapes) > 1:
            raise ValueError(
                f"gt_sem_seg of one batch differ in size {sorted(shapes)}; pad them to one size "
                "(SegDataPreProcessor does so with training=True)"
            )
        return torch.stack(labels)

    def loss_by_feat(
        self, seg_logits: torch.Tensor, batch_data_samples: Sequence[SegDataSample]
    ) -> dict[str, torch.Tensor]:
        """Losses of logits `(N, out_channels, h, w)` against the stacked labels, plus `acc_seg` (%).

        The logits are resized bilinearly to the label size first; with a `sampler`, its pixel weights
        are passed to every loss; each loss is summed into its `loss_name` (e.g. `loss_ce`).
        """
        seg_label = self._stack_batch_gt(batch_data_samples)
        seg_label = seg_label.to(device=seg_logits.device, dtype=torch.long, non_blocking=True).squeeze(1)
        seg_logits = resize(
            seg_logits, size=seg_label.shape[1:], mode="bilinear", align_corners=self.align_corners
        )
        extra = {}
        if self.sampler is not None:
            extra["weight"] = self.sampler.sample(seg_logits, seg_label)
        losses: dict[str, torch.Tensor] = {}
        loss_modules = self.loss_decode if isinstance(self.loss_decode, nn.ModuleList) else [self.loss_decode]
        for loss_module in loss_modules:
            value = loss_module(seg_logits, seg_label, ignore_index=self.ignore_index, **extra)
            name = loss_module.loss_name
            losses[name] = losses[name] + value if name in losses else value
        with torch.no_grad():
            if self.out_channels == 1:
                pred_label = (seg_logits.squeeze(1).sigmoid() > self.threshold).long()
                losses["acc_seg"] = label_accuracy(pred_label, seg_label, ignore_index=self.ignore_index)
            else:
                losses["acc_seg"] = accuracy(seg_logits, seg_label, ignore_index=self.ignore_index)
        return losses

    # --- inference -----------------------------------------------------------------------------------
    def predict(
        self, inputs: Sequence[torch.Tensor], batch_img_metas: Sequence[dict[str, Any]]
    ) -> torch.Tensor:
        """Forward the features and resize the logits to the (padded) input size."""
        return self.predict_by_feat(self.forward(inputs), batch_img_metas)

    def predict_by_feat(
        self, seg_logits: torch.Tensor, batch_img_metas: Sequence[dict[str, Any]]
    ) -> torch.Tensor:
        """Logits resized bilinearly to `batch_img_metas[0]["pad_shape"]` (else `img_shape`)."""
        meta = batch_img_metas[0]
        size = meta["pad_shape"] if "pad_shape" in meta else meta["img_shape"]
        return resize(seg_logits, size=tuple(size)[:2], mode="bilinear", align_corners=self.align_corners)
