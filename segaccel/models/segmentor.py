"""Segmentor: MMSegmentation's EncoderDecoder.

backbone → optional neck → decode head (+ auxiliary heads, training only). Three modes:
`loss` (dict of losses), `predict` (SegDataSamples at `ori_shape`) and `tensor` (raw logits).

Every constructor argument is a JSON-able dict or list; the model is built from the normalised
argument set (tuples as lists, the registered classes' defaults filled in), and exactly that set is
`config.json`, so `Segmentor.from_pretrained` rebuilds the same model. Parts are named by `type`
and resolved only through the `MODELS` registry.

Its neighbours: `inference_modes.py` (whole/slide inference, the smallest input the network takes),
`config_json.py` (the checks and JSON form of the arguments), `pretrained.py` (save_pretrained,
push_to_hub, from_pretrained) and `weights.py` (the one door every weight comes through).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segaccel.registry import MODELS, ConfigError
from segaccel.structures import PixelData, SegDataSample

from . import inference_modes
from .config_guard import check_model_limits
from .config_json import (
    FORMAT_VERSION,
    check_id2label,
    check_label2id,
    check_palette,
    check_pipeline,
    check_test_cfg,
    model_parts,
)
from .pretrained import PretrainedMixin
from .weights import load_transformers_mit, transformers_encoder

MODES = ("loss", "predict", "tensor")
FLIP_DIMS = {"horizontal": (-1,), "vertical": (-2,), "diagonal": (-2, -1)}


class Segmentor(
    nn.Module,
    PretrainedMixin,
    library_name="segaccel",
    tags=["segaccel", "semantic-segmentation", "image-segmentation"],
    pipeline_tag="image-segmentation",
    license="apache-2.0",
):
    """Encoder-decoder segmentor (MMSegmentation's `EncoderDecoder`).

    Args:
        backbone, decode_head: part configs (`type` + keyword arguments), built through MODELS.
        neck: optional neck config.
        auxiliary_head: a head config or a list of them; used for training losses only.
        data_preprocessor: `SegDataPreProcessor` arguments (default: its defaults).
        test_cfg: `{"mode": "whole"}` (default) or `{"mode": "slide", "crop_size": (h, w),
            "stride": (h, w)}`.
        id2label, label2id, palette: class names and colours (`id2label` keys may be strings, as
            in `config.json`; they are stored as ints).
        test_pipeline: transform configs applied at inference before PackSegInputs.
        format_version: the `config.json` layout version.
        init_cfg: must be None (start from weights with `load_from` or `from_pretrained`).
    """

    def __init__(
        self,
        backbone: dict,
        decode_head: dict,
        neck: dict | None = None,
        auxiliary_head: dict | list | None = None,
        data_preprocessor: dict | None = None,
        test_cfg: dict | None = None,
        id2label: dict | None = None,
        label2id: dict | None = None,
        palette: list | None = None,
        test_pipeline: list[dict] | None = None,
        format_version: int = FORMAT_VERSION,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__()
        # Values that size the work (class counts, test-time sizes, slide windows) against the limits of
        # segaccel.limits, before anything is allocated for them.
        check_model_limits(decode_head, auxiliary_head, data_preprocessor, test_cfg, test_pipeline, id2label)
        # Every part in its JSON form (defaults filled in), and built from that: a model built here and
        # one rebuilt from config.json receive exactly the same arguments. `config` adds the current
        # inference settings and class names to these.
        self._hub_mixin_config = parts = model_parts(
            backbone, decode_head, neck, auxiliary_head, data_preprocessor, format_version, init_cfg
        )
        backbone, decode_head, neck = parts["backbone"], parts["decode_head"], parts["neck"]
        auxiliary_head, data_preprocessor = parts["auxiliary_head"], parts["data_preprocessor"]

        hub_pretrained = transformers_encoder(backbone)
        if hub_pretrained is None:
            self.backbone = MODELS.build(backbone, key="model.backbone")
        else:  # a transformers MiT encoder (a repo id or folder): built bare, then loaded and converted
            self.backbone = MODELS.build({**backbone, "pretrained": None}, key="model.backbone")
            load_transformers_mit(self.backbone, hub_pretrained)
        if "weights_license" in backbone:  # the licence of the backbone's weights stays in config.json
            backbone["weights_license"] = getattr(self.backbone, "weights_license", None)
        self.neck = MODELS.build(neck, key="model.neck") if neck is not None else None
        self.decode_head = MODELS.build(decode_head, key="model.decode_head")
        if hasattr(self.decode_head, "bind_backbone"):  # a head that runs the backbone itself (EoMT)
            self.decode_head.bind_backbone(self.backbone)
        if auxiliary_head is None:
            self.auxiliary_head = None
        elif isinstance(auxiliary_head, list):
            self.auxiliary_head = nn.ModuleList(
                MODELS.build(cfg, key=f"model.auxiliary_head[{i}]") for i, cfg in enumerate(auxiliary_head)
            )
        elif isinstance(auxiliary_head, dict):
            self.auxiliary_head = MODELS.build(auxiliary_head, key="model.auxiliary_head")
        else:
            got = type(auxiliary_head).__name__
            raise ConfigError(f"model.auxiliary_head: expected a mapping or a list, got {got}")
        self.data_preprocessor = MODELS.build(data_preprocessor, key="model.data_preprocessor")

        # Inference settings and class names: checked here and whenever they are set again.
        self.test_cfg = test_cfg
        self.id2label = id2label
        if label2id is not None:
            self.label2id = label2id
        self.palette = palette
        self.test_pipeline = test_pipeline

    # --- description ----------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """The full JSON-able description of this model: what `save_pretrained` writes to config.json.

        The parts' configs as built, plus the current `test_cfg`, class names, palette and test
        pipeline (which may be changed on the model after construction).
        """
        cfg = copy.deepcopy(self._hub_mixin_config)
        cfg.update(
            test_cfg=check_test_cfg(self.test_cfg),
            id2label=None if self.id2label is None else {str(k): v for k, v in self.id2label.items()},
            label2id=copy.deepcopy(self.label2id),
            palette=check_palette(self.palette),
            test_pipeline=check_pipeline(self.test_pipeline),
        )
        return cfg

    @property
    def test_cfg(self) -> dict[str, Any]:
        """`{"mode": "whole"}` or `{"mode": "slide", "crop_size": [h, w], "stride": [h, w]}`."""
        return self._test_cfg

    @test_cfg.setter
    def test_cfg(self, value: dict | None) -> None:
        self._test_cfg = check_test_cfg(value)

    @property
    def id2label(self) -> dict[int, str] | None:
        """Class index → name (int keys). Setting it also sets `label2id` to its inverse."""
        return self._id2label

    @id2label.setter
    def id2label(self, value: dict | None) -> None:
        self._id2label = check_id2label(value, self.num_classes)
        self._label2id = None if self._id2label is None else {v: k for k, v in self._id2label.items()}

    @property
    def label2id(self) -> dict[str, int] | None:
        return self._label2id

    @label2id.setter
    def label2id(self, value: dict | None) -> None:
        self._label2id = check_label2id(value, self._id2label)

    @property
    def palette(self) -> list[list[int]] | None:
        """One `[r, g, b]` per class."""
        return self._palette

    @palette.setter
    def palette(self, value: list | None) -> None:
        self._palette = check_palette(value)

    @property
    def test_pipeline(self) -> list[dict] | None:
        """Transform configs applied by `inference_model` before PackSegInputs."""
        return self._test_pipeline

    @test_pipeline.setter
    def test_pipeline(self, value: list | None) -> None:
        self._test_pipeline = check_pipeline(value)

    @property
    def num_classes(self) -> int:
        return self.decode_head.num_classes

    @property
    def out_channels(self) -> int:
        return self.decode_head.out_channels

    @property
    def align_corners(self) -> bool:
        return self.decode_head.align_corners

    @property
    def with_neck(self) -> bool:
        return self.neck is not None

    @property
    def with_auxiliary_head(self) -> bool:
        return self.auxiliary_head is not None

    # --- forward --------------------------------------------------------------------------------
    def forward(
        self, inputs: torch.Tensor, data_samples: list[SegDataSample] | None = None, mode: str = "tensor"
    ) -> dict[str, torch.Tensor] | list[SegDataSample] | torch.Tensor:
        """`mode="loss"` → dict of losses, `"predict"` → list of SegDataSample, `"tensor"` → logits."""
        if mode == "loss":
            if data_samples is None:
                raise ValueError("Segmentor.forward(mode='loss') needs data_samples with gt_sem_seg")
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            return self._forward(inputs, data_samples)
        raise ValueError(f"Segmentor.forward: unknown mode {mode!r}; expected one of {', '.join(MODES)}")

    def extract_feat(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Backbone (and neck) features of `(N, C, H, W)` inputs; for a head that runs the backbone itself
        (`runs_backbone`: EoMT, whose queries join the backbone's last blocks), `[inputs]` as they are."""
        if getattr(self.decode_head, "runs_backbone", False):
            return [inputs]
        feats = self.backbone(inputs)
        if self.neck is not None:
            feats = self.neck(feats)
        return feats

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        """Logits `(N, out_channels, H, W)` resized by the head to `batch_img_metas[0]["pad_shape"]`."""
        return self.decode_head.predict(self.extract_feat(inputs), batch_img_metas)

    def loss(self, inputs: torch.Tensor, data_samples: list[SegDataSample]) -> dict[str, torch.Tensor]:
        """Losses of the decode head (`decode.*`) and auxiliary heads (`aux.*` or `aux_{i}.*`)."""
        feats = self.extract_feat(inputs)
        losses = _prefixed(self.decode_head.loss(feats, data_samples), "decode.")
        if isinstance(self.auxiliary_head, nn.ModuleList):
            for i, head in enumerate(self.auxiliary_head):
                losses.update(_prefixed(head.loss(feats, data_samples), f"aux_{i}."))
        elif self.auxiliary_head is not None:
            losses.update(_prefixed(self.auxiliary_head.loss(feats, data_samples), "aux."))
        return losses

    def predict(
        self, inputs: torch.Tensor, data_samples: list[SegDataSample] | None = None
    ) -> list[SegDataSample]:
        """Segment a batch; samples get `seg_logits` and `pred_sem_seg` at their `ori_shape`.

        Without `data_samples`, every image is taken as unpadded, unflipped and at its original size.
        The given samples are filled in place (their `gt_sem_seg` stays) and returned.
        """
        if data_samples is None:
            hw = tuple(inputs.shape[-2:])
            meta = {"ori_shape": hw, "img_shape": hw, "pad_shape": hw, "padding_size": (0, 0, 0, 0)}
            data_samples = [SegDataSample(metainfo=meta) for _ in range(inputs.shape[0])]
        seg_logits = self.inference(inputs, [sample.metainfo for sample in data_samples])
        return self.postprocess_result(seg_logits, data_samples)

    def _forward(self, inputs: torch.Tensor, data_samples: list[SegDataSample] | None = None) -> torch.Tensor:
        """The decode head's raw logits `(N, out_channels, h, w)`, no resizing or post-processing (a
        mask-classification head's per-class scores of its last layer, `forward_semantic`)."""
        feats = self.extract_feat(inputs)
        if hasattr(self.decode_head, "forward_semantic"):
            return self.decode_head.forward_semantic(feats)
        return self.decode_head.forward(feats)

    def set_train_progress(self, iteration: int, max_iters: int) -> None:
        """Called by the train loop before each optimizer step (`iteration` steps done of `max_iters`):
        parts whose behaviour follows training progress (EoMT's mask annealing) set it from the
        iteration alone, so a resumed run behaves exactly as an uninterrupted one."""
        for module in self.modules():
            if module is not self and hasattr(module, "set_train_progress"):
                module.set_train_progress(iteration, max_iters)

    # --- inference ------------------------------------------------------------------------------
    def inference(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        """Logits `(N, out_channels, H, W)` at the (padded) input size, by `whole` or `slide`."""
        if len(batch_img_metas) != inputs.shape[0]:
            raise ValueError(f"{inputs.shape[0]} inputs but {len(batch_img_metas)} image metas")
        # The logits must come back at the size of the (padded) batch, whatever the metas say.
        hw = tuple(inputs.shape[-2:])
        metas = [{**meta, "pad_shape": hw} for meta in batch_img_metas]
        self.test_cfg = self.test_cfg  # re-check: the dict may have been edited in place
        if self.test_cfg["mode"] == "slide":
            return self.slide_inference(inputs, metas)
        return self.whole_inference(inputs, metas)

    def whole_inference(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        """The whole (padded) batch in one forward; a batch smaller than `min_input_size` is padded up to
        it and its logits cropped back (`inference_modes.whole_inference`)."""
        return inference_modes.whole_inference(self, inputs, batch_img_metas)

    def slide_inference(
        self, inputs: torch.Tensor, batch_img_metas: list[dict], crops_per_batch: int = 4
    ) -> torch.Tensor:
        """Overlapping `test_cfg` `crop_size` windows every `stride`, `crops_per_batch` crops per forward;
        logits summed and divided by a count map (`inference_modes.slide_inference`)."""
        return inference_modes.slide_inference(self, inputs, batch_img_metas, crops_per_batch)

    @property
    def pad_val(self) -> float:
        """The value padded image pixels get (after normalisation): the data preprocessor's `pad_val`."""
        return float(getattr(self.data_preprocessor, "pad_val", 0))

    def min_input_size(self, like: torch.Tensor | None = None) -> tuple[int, int] | None:
        """The smallest `(h, w)` input the network takes, found once by probing; None if unknown
        (`inference_modes.min_input_size`). `like` gives the channels, device and dtype of the blank
        probe inputs (default: the model's)."""
        if like is None:
            param = next(self.parameters())
            channels = int(self.data_preprocessor.mean.shape[0]) if self.data_preprocessor.normalize else 3
            like = param.new_zeros((1, channels, 1, 1))
        return inference_modes.min_input_size(self, like)

    def postprocess_result(
        self, seg_logits: torch.Tensor, data_samples: list[SegDataSample]
    ) -> list[SegDataSample]:
        """Per sample: drop the padding, undo the flip, resize to `ori_shape`, then argmax.

        Writes `seg_logits` (float `(C, H, W)`; sigmoid probabilities for a 1-channel head) and
        `pred_sem_seg` (int64 `(1, H, W)`; `> threshold` for a 1-channel head).
        """
        _, channels, h, w = seg_logits.shape
        for i, sample in enumerate(data_samples):
            meta = sample.metainfo
            padding = meta.get("padding_size")
            if padding is None:
                img_h, img_w = meta.get("img_shape", (h, w))
                padding = (0, w - img_w, 0, h - img_h)
            left, right, top, bottom = (int(p) for p in padding)
            logits = seg_logits[i : i + 1, :, top : h - bottom, left : w - right]
            if meta.get("flip"):
                direction = meta.get("flip_direction")
                if direction not in FLIP_DIMS:
                    raise ValueError(
                        f"data_samples[{i}]: flip_direction {direction!r} is not one of "
                        f"{', '.join(FLIP_DIMS)}"
                    )
                logits = logits.flip(dims=FLIP_DIMS[direction])
            ori_shape = tuple(int(s) for s in meta.get("ori_shape", logits.shape[-2:]))
            if tuple(logits.shape[-2:]) != ori_shape:
                logits = F.interpolate(
                    logits, size=ori_shape, mode="bilinear", align_corners=self.align_corners
                )
            logits = logits[0]
            if channels > 1:
                pred = logits.argmax(dim=0, keepdim=True)
            else:
                logits = logits.sigmoid()
                pred = (logits > self.decode_head.threshold).long()
            sample.seg_logits = PixelData(logits)
            sample.pred_sem_seg = PixelData(pred)
        return data_samples


# --- helpers ------------------------------------------------------------------------------------
def _prefixed(losses: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in losses.items()}
