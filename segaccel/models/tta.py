"""`SegTTAModel`: test-time augmentation around a Segmentor (MMSegmentation's SegTTAModel).

Every image of a batch is segmented at several scales, each optionally flipped too; every
augmented prediction is brought back to the image's `ori_shape` by the segmentor's own
`postprocess_result` (padding dropped, resize), turned into probabilities (softmax; sigmoid for a
1-channel head) and the probabilities are averaged before the argmax, as MMSegmentation's
`SegTTAModel.merge_preds` does.

One difference from MMSegmentation's `tta_pipeline`: the scales are ratios of the size the test
pipeline gives (the size the model segments at without TTA), applied on the device to the
normalised image, not ratios of the original image size applied by a data transform; so TTA is
an option of the test script and needs no second pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segaccel.models.segmentor import FLIP_DIMS, Segmentor
from segaccel.registry import MODELS, ConfigError
from segaccel.structures import PixelData, SegDataSample


class SegTTAModel(nn.Module):
    """A Segmentor whose `predict` averages the probabilities of scaled and flipped copies.

    Args:
        module: the Segmentor, or its config (built through MODELS; `type` defaults to Segmentor,
            so a saved model's `config.json` is a valid `module`).
        scales: resize ratios of each image, relative to the test pipeline's output (1.0 = as is).
        flip: also segment every scale flipped, and flip the prediction back.
        flip_direction: `horizontal`, `vertical` or `diagonal`.
    """

    def __init__(
        self,
        module: Segmentor | dict,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        flip_direction: str = "horizontal",
    ) -> None:
        super().__init__()
        if isinstance(module, dict):
            module = MODELS.build({"type": "Segmentor", **module}, key="tta.module")
        if not isinstance(module, nn.Module) or not hasattr(module, "postprocess_result"):
            raise ConfigError(f"SegTTAModel.module: expected a Segmentor, got {type(module).__name__}")
        scales = [float(s) for s in scales]
        if not scales or any(s <= 0 for s in scales):
            raise ConfigError(f"SegTTAModel.scales: expected positive ratios, got {scales}")
        if flip_direction not in FLIP_DIMS:
            raise ConfigError(
                f"SegTTAModel.flip_direction: expected one of {', '.join(FLIP_DIMS)}, got {flip_direction!r}"
            )
        self.module = module
        self.scales = scales
        self.flip = bool(flip)
        self.flip_direction = flip_direction

    # What the loops and the runner read from a model.
    @property
    def data_preprocessor(self) -> nn.Module:
        return self.module.data_preprocessor

    @property
    def num_classes(self) -> int:
        return self.module.num_classes

    @property
    def out_channels(self) -> int:
        return self.module.out_channels

    @property
    def id2label(self) -> dict[int, str] | None:
        return self.module.id2label

    @property
    def palette(self) -> list[list[int]] | None:
        return self.module.palette

    @property
    def num_augmentations(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def forward(
        self, inputs: torch.Tensor, data_samples: list[SegDataSample] | None = None, mode: str = "predict"
    ) -> list[SegDataSample]:
        if mode != "predict":
            raise ValueError(f"SegTTAModel only predicts (mode='predict'), got mode={mode!r}")
        return self.predict(inputs, data_samples)

    @torch.no_grad()
    def predict(
        self, inputs: torch.Tensor, data_samples: list[SegDataSample] | None = None
    ) -> list[SegDataSample]:
        """Fill each sample's `seg_logits` (averaged probabilities `(C, H, W)` at `ori_shape`) and
        `pred_sem_seg` (their argmax, or `> threshold` for a 1-channel head); returns the samples."""
        if data_samples is None:
            hw = tuple(inputs.shape[-2:])
            meta = {"ori_shape": hw, "img_shape": hw, "pad_shape": hw, "padding_size": (0, 0, 0, 0)}
            data_samples = [SegDataSample(metainfo=meta) for _ in range(inputs.shape[0])]
        metas = [_unpadded_meta(sample.metainfo, tuple(inputs.shape[-2:])) for sample in data_samples]
        dims = FLIP_DIMS[self.flip_direction]
        sums: list[torch.Tensor | None] = [None] * len(data_samples)
        for scale in self.scales:
            batch, batch_metas = self._resized(inputs, metas, scale)
            for flipped in (False, True) if self.flip else (False,):
                logits = self.module.inference(batch.flip(dims) if flipped else batch, batch_metas)
                if flipped:
                    logits = logits.flip(dims)
                outputs = self.module.postprocess_result(
                    logits, [SegDataSample(metainfo=dict(m)) for m in batch_metas]
                )
                for i, out in enumerate(outputs):
                    probs = out.seg_logits.data
                    if self.out_channels > 1:
                        probs = probs.float().softmax(dim=0)  # a 1-channel head gives probabilities already
                    sums[i] = probs if sums[i] is None else sums[i] + probs
        for sample, total in zip(data_samples, sums):
            probs = total / self.num_augmentations
            if self.out_channels > 1:
                pred = probs.argmax(dim=0, keepdim=True)
            else:
                pred = (probs > self.module.decode_head.threshold).long()
            sample.seg_logits = PixelData(probs)
            sample.pred_sem_seg = PixelData(pred)
        return data_samples

    def _resized(
        self, inputs: torch.Tensor, metas: list[dict[str, Any]], scale: float
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """The batch with every image (its unpadded part) resized by `scale`, padded right/bottom again."""
        if scale == 1.0:
            return inputs, metas
        images, new_metas = [], []
        for i, meta in enumerate(metas):
            left, _, top, _ = meta["padding_size"]
            h, w = meta["img_shape"]
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            image = inputs[i : i + 1, :, top : top + h, left : left + w]
            images.append(F.interpolate(image, size=size, mode="bilinear", align_corners=False))
            new_metas.append({**meta, "img_shape": size})
        pad_h, pad_w = self._pad_shape([m["img_shape"] for m in new_metas])
        pad_val = float(getattr(self.data_preprocessor, "pad_val", 0))
        batch = inputs.new_full((len(images), inputs.shape[1], pad_h, pad_w), pad_val)
        for i, (image, meta) in enumerate(zip(images, new_metas)):
            h, w = meta["img_shape"]
            batch[i, :, :h, :w] = image[0]
            meta.update(pad_shape=(pad_h, pad_w), padding_size=(0, pad_w - w, 0, pad_h - h))
        return batch, new_metas

    def _pad_shape(self, shapes: list[tuple[int, int]]) -> tuple[int, int]:
        """The size the data preprocessor pads a test batch of these `(h, w)` sizes to."""
        return tuple(self.data_preprocessor.padded_size(shapes, training=False))


def _unpadded_meta(meta: dict[str, Any], batch_hw: tuple[int, int]) -> dict[str, Any]:
    """`meta` with `img_shape` and `padding_size` filled in (the preprocessor writes both)."""
    h, w = batch_hw
    img_h, img_w = (int(s) for s in meta.get("img_shape", batch_hw))
    padding = meta.get("padding_size") or (0, w - img_w, 0, h - img_h)
    return {
        **meta,
        "img_shape": (img_h, img_w),
        "padding_size": tuple(int(p) for p in padding),
        "ori_shape": tuple(int(s) for s in meta.get("ori_shape", (img_h, img_w))),
    }
