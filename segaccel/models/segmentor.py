"""Segmentor: MMSegmentation's EncoderDecoder, saved and loaded through the Hugging Face Hub.

backbone → optional neck → decode head (+ auxiliary heads, training only). Three modes:
`loss` (dict of losses), `predict` (SegDataSamples at `ori_shape`) and `tensor` (raw logits).

Every constructor argument is a JSON-able dict or list; the model is built from the normalised
argument set (tuples as lists, the registered classes' defaults filled in), and exactly that set is
`config.json`, so `Segmentor.from_pretrained` rebuilds the same model. Parts are named by `type`
and resolved only through the `MODELS` registry.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from torch import nn

from segaccel.registry import MODELS, ConfigError
from segaccel.structures import PixelData, SegDataSample

from .checkpoint_formats import format_of_config
from .weights import (
    foreign_model_kwargs,
    load_checked_state_dict,
    load_pretrained_weights,  # noqa: F401  (importable here until segaccel.engine imports it from .weights)
    load_transformers_mit,
    read_checkpoint,
    torch_dtype,
    transformers_encoder,
    weights_source,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the `config.json` layout written by `save_pretrained`; bumped on incompatible changes."""

MODES = ("loss", "predict", "tensor")
FLIP_DIMS = {"horizontal": (-1,), "vertical": (-2,), "diagonal": (-2, -1)}
_UNKNOWN = object()  # min_input_size not probed yet
_MAX_PROBE = 512  # the largest square side min_input_size tries


class Segmentor(
    nn.Module,
    PyTorchModelHubMixin,
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
        _check_format_version(format_version)
        if init_cfg is not None:
            raise ConfigError(
                "model.init_cfg is not supported: start from weights with `load_from` (a file, folder "
                "or Hub id) or Segmentor.from_pretrained; backbone ImageNet weights go in model.backbone"
            )
        for key, part in (("backbone", backbone), ("decode_head", decode_head)):
            if not isinstance(part, dict):
                raise ConfigError(f"model.{key}: expected a mapping with a `type`, got {type(part).__name__}")
        _check_num_classes(decode_head, "model.decode_head")
        if isinstance(auxiliary_head, dict):
            _check_num_classes(auxiliary_head, "model.auxiliary_head")
        elif isinstance(auxiliary_head, (list, tuple)):
            for i, head in enumerate(auxiliary_head):
                if isinstance(head, dict):
                    _check_num_classes(head, f"model.auxiliary_head[{i}]")
        if data_preprocessor is None:
            data_preprocessor = {}
        if not isinstance(data_preprocessor, dict):
            got = type(data_preprocessor).__name__
            raise ConfigError(f"model.data_preprocessor: expected a mapping, got {got}")
        data_preprocessor = {"type": "SegDataPreProcessor", **data_preprocessor}

        # Normalise every part to its JSON form (with defaults filled in) and build from that, so a
        # model built here and one rebuilt from config.json receive exactly the same arguments.
        backbone = _complete_defaults(_to_json(backbone, "model.backbone"))
        decode_head = _complete_defaults(_to_json(decode_head, "model.decode_head"))
        neck = _complete_defaults(_to_json(neck, "model.neck"))
        auxiliary_head = _complete_defaults(_to_json(auxiliary_head, "model.auxiliary_head"))
        data_preprocessor = _complete_defaults(_to_json(data_preprocessor, "model.data_preprocessor"))

        hub_pretrained = transformers_encoder(backbone)
        if hub_pretrained is None:
            self.backbone = MODELS.build(backbone, key="model.backbone")
        else:  # a transformers MiT encoder (a repo id or folder): built bare, then loaded and converted
            self.backbone = MODELS.build({**backbone, "pretrained": None}, key="model.backbone")
            load_transformers_mit(self.backbone, hub_pretrained)
        self.neck = MODELS.build(neck, key="model.neck") if neck is not None else None
        self.decode_head = MODELS.build(decode_head, key="model.decode_head")
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

        # The parts as built; `config` adds the current inference settings and class names.
        self._hub_mixin_config = {
            "backbone": backbone,
            "decode_head": decode_head,
            "neck": neck,
            "auxiliary_head": auxiliary_head,
            "data_preprocessor": data_preprocessor,
            "format_version": format_version,
            "init_cfg": None,
        }

    # --- description ----------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """The full JSON-able description of this model: what `save_pretrained` writes to config.json.

        The parts' configs as built, plus the current `test_cfg`, class names, palette and test
        pipeline (which may be changed on the model after construction).
        """
        cfg = copy.deepcopy(self._hub_mixin_config)
        cfg.update(
            test_cfg=_check_test_cfg(self.test_cfg),
            id2label=None if self.id2label is None else {str(k): v for k, v in self.id2label.items()},
            label2id=copy.deepcopy(self.label2id),
            palette=_check_palette(self.palette),
            test_pipeline=_check_pipeline(self.test_pipeline),
        )
        return cfg

    @property
    def test_cfg(self) -> dict[str, Any]:
        """`{"mode": "whole"}` or `{"mode": "slide", "crop_size": [h, w], "stride": [h, w]}`."""
        return self._test_cfg

    @test_cfg.setter
    def test_cfg(self, value: dict | None) -> None:
        self._test_cfg = _check_test_cfg(value)

    @property
    def id2label(self) -> dict[int, str] | None:
        """Class index → name (int keys). Setting it also sets `label2id` to its inverse."""
        return self._id2label

    @id2label.setter
    def id2label(self, value: dict | None) -> None:
        self._id2label = _check_id2label(value, self.num_classes)
        self._label2id = None if self._id2label is None else {v: k for k, v in self._id2label.items()}

    @property
    def label2id(self) -> dict[str, int] | None:
        return self._label2id

    @label2id.setter
    def label2id(self, value: dict | None) -> None:
        self._label2id = _check_label2id(value, self._id2label)

    @property
    def palette(self) -> list[list[int]] | None:
        """One `[r, g, b]` per class."""
        return self._palette

    @palette.setter
    def palette(self, value: list | None) -> None:
        self._palette = _check_palette(value)

    @property
    def test_pipeline(self) -> list[dict] | None:
        """Transform configs applied by `inference_model` before PackSegInputs."""
        return self._test_pipeline

    @test_pipeline.setter
    def test_pipeline(self, value: list | None) -> None:
        self._test_pipeline = _check_pipeline(value)

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
        """Backbone (and neck) features of `(N, C, H, W)` inputs."""
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
        """The decode head's raw logits `(N, out_channels, h, w)`, no resizing or post-processing."""
        return self.decode_head.forward(self.extract_feat(inputs))

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
        """The whole (padded) batch in one forward.

        A batch smaller than the network takes (`min_input_size`, e.g. a 20x20 image through MiT, whose
        first spatial-reduction conv needs a stage-1 map of at least 8x8) is padded right/bottom with
        the preprocessor's `pad_val` up to that size, as the preprocessor's own `size_divisor` padding
        would, and the logits are cropped back. A batch the network takes as it is runs unchanged.
        """
        return self._padded_encode_decode(inputs, batch_img_metas, self._min_input_size(inputs))

    def slide_inference(
        self, inputs: torch.Tensor, batch_img_metas: list[dict], crops_per_batch: int = 4
    ) -> torch.Tensor:
        """Overlapping `crop_size` windows every `stride`; logits summed and divided by a count map.

        As MMSegmentation: the last window of a row/column is shifted back to end at the border, and
        a window is never larger than the image. The model only ever sees `crop_size` windows, the size
        it was trained on: a window of an image smaller than the crop (in one or both dimensions) is
        padded right/bottom with the preprocessor's `pad_val` up to `crop_size` (and further, should
        the crop be smaller than `min_input_size`), and its logits are cropped back. Memory is bounded
        by the crops and the output, not by the image: windows go through the model a few at a time
        (`crops_per_batch` crops per forward, at least one window of every image), and their logits
        are added in place into the output-sized sum; the count map is one `(1, 1, H, W)` plane.
        """
        h_crop, w_crop = self.test_cfg["crop_size"]
        n, _, h_img, w_img = inputs.shape
        windows = slide_windows((h_img, w_img), self.test_cfg["crop_size"], self.test_cfg["stride"])
        min_h, min_w = self._min_input_size(inputs) or (1, 1)
        window_hw = (max(h_crop, min_h), max(w_crop, min_w))  # what the model sees
        preds = inputs.new_zeros((n, self.out_channels, h_img, w_img))
        count = inputs.new_zeros((1, 1, h_img, w_img))
        per_forward = max(1, crops_per_batch // n)
        for start in range(0, len(windows), per_forward):
            group = windows[start : start + per_forward]
            crops = torch.cat([inputs[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in group])
            crop_metas = [
                {**m, "img_shape": tuple(crops.shape[-2:]), "pad_shape": tuple(crops.shape[-2:])}
                for _ in group
                for m in batch_img_metas
            ]
            crop_logits = self._padded_encode_decode(crops, crop_metas, window_hw)
            for i, (y1, y2, x1, x2) in enumerate(group):
                preds[:, :, y1:y2, x1:x2] += crop_logits[i * n : (i + 1) * n]
                count[:, :, y1:y2, x1:x2] += 1
            del crops, crop_logits
        return preds.div_(count)

    def _padded_encode_decode(
        self, inputs: torch.Tensor, batch_img_metas: list[dict], min_hw: Sequence[int] | None
    ) -> torch.Tensor:
        """`encode_decode` of `inputs` padded right/bottom with `pad_val` to at least `min_hw`, its
        logits cropped back to the input size; inputs already that large go through untouched."""
        h, w = inputs.shape[-2:]
        if min_hw is None or (h >= min_hw[0] and w >= min_hw[1]):
            return self.encode_decode(inputs, batch_img_metas)
        pad_h, pad_w = max(h, int(min_hw[0])), max(w, int(min_hw[1]))
        padded = F.pad(inputs, (0, pad_w - w, 0, pad_h - h), value=self.pad_val)
        metas = [{**m, "pad_shape": (pad_h, pad_w)} for m in batch_img_metas]
        return self.encode_decode(padded, metas)[:, :, :h, :w]

    @property
    def pad_val(self) -> float:
        """The value padded image pixels get (after normalisation): the data preprocessor's `pad_val`."""
        return float(getattr(self.data_preprocessor, "pad_val", 0))

    def min_input_size(self, like: torch.Tensor | None = None) -> tuple[int, int] | None:
        """The smallest `(h, w)` input the network (backbone, neck, decode head) takes; None if unknown.

        Found once, by running the network (eval mode, no grad) on blank inputs, squares of 1, 2, 4,
        ... 512 pixels, then bisecting the height and width; the result is kept on the model. A size
        at which the forward raises counts as too small: that error is never shown, but no real image
        is ever hidden by it either; an image the network cannot take even padded to this size fails
        with the network's own error. None when no square up to 512 runs (a network that takes only
        one fixed size, say): inputs are then never padded. Assumes, as for convolutional and MiT
        backbones, that a network taking a size takes every larger one. `like` gives the channels,
        device and dtype of the blank inputs (default: the model's).
        """
        if like is None:
            param = next(self.parameters())
            channels = int(self.data_preprocessor.mean.shape[0]) if self.data_preprocessor.normalize else 3
            like = param.new_zeros((1, channels, 1, 1))
        return self._min_input_size(like)

    def _min_input_size(self, like: torch.Tensor) -> tuple[int, int] | None:
        """`min_input_size` with blank inputs like `like` (its channels, device and dtype); cached."""
        cached = self.__dict__.get("_min_input_hw", _UNKNOWN)
        if cached is not _UNKNOWN:
            return cached
        channels = like.shape[1]

        def runs(h: int, w: int) -> bool:
            x = like.new_zeros((1, channels, h, w))
            meta = {"ori_shape": (h, w), "img_shape": (h, w), "pad_shape": (h, w)}
            try:
                self.encode_decode(x, [meta])
            except Exception:  # too small for some layer (a conv kernel, a pooling, an assert, ...)
                return False
            return True

        def smallest(lo: int, hi: int, fits) -> int:  # fits(lo) is False or lo == 0, fits(hi) is True
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if fits(mid) else (mid, hi)
            return hi

        # Eval mode for the probe (no BN statistics updated); each module's own mode is restored after it,
        # so a frozen BN stays in eval in a training model.
        modes = [(module, module.training) for module in self.modules()]
        self.eval()
        try:
            with torch.no_grad():
                result = None
                side, previous = 1, 0
                while side <= _MAX_PROBE and not runs(side, side):
                    side, previous = side * 2, side
                if side <= _MAX_PROBE:
                    square = smallest(previous, side, lambda s: runs(s, s))
                    result = (
                        smallest(0, square, lambda s: runs(s, square)),
                        smallest(0, square, lambda s: runs(square, s)),
                    )
        finally:
            for module, training in modes:
                module.training = training
        if result is not None and result != (1, 1):
            logger.info(
                "the network takes inputs of at least %dx%d (h x w); smaller images and slide windows are "
                "padded with pad_val=%s up to that size and their logits cropped back",
                *result,
                self.pad_val,
            )
        self.__dict__["_min_input_hw"] = result
        return result

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

    # --- Hub ------------------------------------------------------------------------------------
    def config_for_saving(self) -> dict[str, Any]:
        """`config`, pointing at no pretrained weights (backbone `pretrained` and every `init_cfg` None)."""
        return _without_pretrained(self.config)

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write `model.safetensors` and `config.json` (the full model description)."""
        from safetensors.torch import save_model

        save_directory = Path(save_directory)
        save_model(self, str(save_directory / constants.SAFETENSORS_SINGLE_FILE))
        text = json.dumps(self.config_for_saving(), sort_keys=True, indent=2)
        (save_directory / constants.CONFIG_NAME).write_text(text + "\n", encoding="utf-8")

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        config: dict | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write `config.json`, `model.safetensors` and a `README.md` model card into `save_directory`.

        The card (`segaccel.model_card.build_model_card`) takes `model_card_kwargs` (`metrics`,
        `train_config`, `train_command`, `repo_id`, ...); metrics and training config not given are
        read from `metrics.json` / `config.yaml` already in the folder (a runner export). A card
        segaccel wrote before is replaced; one written by hand is kept.
        """
        save_directory = Path(save_directory)
        from segaccel.model_card import is_generated_card

        readme = save_directory / constants.REPOCARD_NAME
        if readme.is_file() and is_generated_card(readme.read_text(encoding="utf-8")):
            readme.unlink()
        card_kwargs = {"model_dir": save_directory, **(model_card_kwargs or {})}
        if repo_id is not None:
            card_kwargs.setdefault("repo_id", repo_id)
        return super().save_pretrained(
            save_directory,
            config=config,
            repo_id=repo_id,
            push_to_hub=push_to_hub,
            model_card_kwargs=card_kwargs,
            **push_to_hub_kwargs,
        )

    def push_to_hub(
        self, repo_id: str, *, model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> str:
        """`PyTorchModelHubMixin.push_to_hub` (one commit: config.json, model.safetensors, README.md),
        with `repo_id` in the model card's usage snippet. For a saved folder with its metrics and
        training config, `segaccel.hub.push_model_dir` (`scripts/push_to_hub.py`) pushes those too."""
        card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=card_kwargs, **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The model card of this model (called by `save_pretrained` and `push_to_hub`).

        The card is built from data only (the saved config, metrics, training config) by
        `segaccel.model_card`, which imports nothing of `segaccel.models`.
        """
        from segaccel.model_card import build_model_card

        return build_model_card(self.config_for_saving(), **kwargs)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | Path, *args: Any, **kwargs: Any
    ) -> Segmentor:
        """`PyTorchModelHubMixin.from_pretrained` (see `_from_pretrained`), from any source the weights door
        (`segaccel.models.weights`) reads: a model folder, a Hub id (`org/name`; `org/name@revision`
        pins a revision), or a weights file (`.safetensors`, `.bin`, `.pth`, `.pt`), the model then being
        described by the `config.json` beside the file (or by keyword arguments such as `backbone=`).

        `config.json` is read and checked first, so that a malformed one (not JSON, not an object, a part
        that is not an object, a layout version newer than this segaccel reads, ...) gives a ConfigError
        naming the file and what was expected, before anything is built.
        """
        source = weights_source(pretrained_model_name_or_path, kwargs.pop("revision", None))
        if source.kind == "hub":
            kwargs["revision"] = source.revision
        elif source.kind == "file":
            kwargs["weights_file"] = source.location
        model_id = source.model_location
        try:
            found, config = _read_config_json(model_id, kwargs)
            if found:
                _check_config_json(config, f"{model_id}/{constants.CONFIG_NAME}", given=kwargs)
            return super().from_pretrained(model_id, *args, **kwargs)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{pretrained_model_name_or_path}: {constants.CONFIG_NAME} (or another JSON file of the "
                f"model) is not valid JSON: {exc}"
            ) from exc

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str | torch.device = "cpu",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        strict: bool = True,
        num_classes: int | None = None,
        config: dict | None = None,
        weights_file: str | None = None,
        **model_kwargs: Any,
    ) -> Segmentor:
        """Build the model from `config.json` and load its weights, strictly by default.

        `model_id` is a local folder or a Hub repo id (downloaded with `revision`, `cache_dir`,
        `token`, `local_files_only`, `force_download`, or read from the Hugging Face cache when
        offline); `weights_file` replaces its weights by a file's (set by `from_pretrained` when given
        a file). A foreign repo (a `model_type` of `checkpoint_formats.CHECKPOINT_FORMATS` in its
        config.json, e.g. a transformers SegFormer) is converted on load, and so are foreign weights.
        `device` (or `map_location`) and `dtype` place the loaded model.

        `strict=True` raises on any missing, unexpected or mis-shaped weight, naming them. Passing
        `num_classes=` (or an `id2label=` of another length) builds heads for that many classes and
        re-initialises the classifier weights whose shape no longer fits, saying so in the log.
        Other keyword arguments override config.json entries (e.g. `test_cfg=`).
        """
        hub_kwargs = dict(
            cache_dir=cache_dir, force_download=force_download, token=token, local_files_only=local_files_only
        )
        source = weights_source(model_id, revision)
        saved_config = config
        foreign = format_of_config(config)
        if foreign is not None:
            model_kwargs, config = foreign_model_kwargs(foreign, source, config, model_kwargs, **hub_kwargs)
        elif config is None and "backbone" not in model_kwargs:
            raise FileNotFoundError(
                f"{model_id}: no {constants.CONFIG_NAME} found; it describes the model to build (pass "
                "backbone=, decode_head=, ... to build one without it)"
            )
        unknown = sorted(set(config or {}) - set(inspect.signature(cls.__init__).parameters) - {"self"})
        if unknown:
            raise ConfigError(
                f"{model_id}/{constants.CONFIG_NAME}: unknown entries {', '.join(unknown)} "
                "(written by another library or a newer segaccel?)"
            )
        kwargs, reinit_heads = _load_kwargs(model_kwargs, config or {}, num_classes)
        try:
            model = cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{model_id}/{constants.CONFIG_NAME}: {exc}") from exc

        weights = weights_source(weights_file) if weights_file is not None else source
        checkpoint = read_checkpoint(weights, config=saved_config, **hub_kwargs)
        model.load_weights(
            checkpoint.state_dict, strict=strict, reinit_heads=reinit_heads, source=checkpoint.file
        )
        model.to(device=device if device is not None else map_location, dtype=torch_dtype(dtype))
        model.eval()
        return model

    def load_weights(
        self,
        state_dict: dict[str, torch.Tensor],
        strict: bool = True,
        reinit_heads: bool = False,
        source: str = "state_dict",
    ) -> None:
        """Load a state dict, reporting every missing, unexpected and mis-shaped key by name
        (`weights.load_checked_state_dict`).

        `reinit_heads=True` skips head weights whose shape differs (a new class count) and logs them.
        With `strict=False`, missing and unexpected keys are logged instead of raising.
        """
        load_checked_state_dict(self, state_dict, strict=strict, reinit_heads=reinit_heads, source=source)


# --- helpers ------------------------------------------------------------------------------------
def _prefixed(losses: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in losses.items()}


def _to_json(value: Any, key: str) -> Any:
    """`value` as JSON would give it back (tuples → lists, dict keys → str); a clear error otherwise."""
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_to_json(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise ConfigError(f"{key}: key {k!r} is not a string or an int")
            out[str(k)] = _to_json(v, f"{key}.{k}")
        return out
    raise ConfigError(
        f"{key}: a {type(value).__name__} is not JSON-able; model arguments must be dicts, lists, strings, "
        "numbers, booleans or None, so that config.json describes the model fully"
    )


def _complete_defaults(value: Any) -> Any:
    """Fill the defaults of every registered part (`{"type": ...}` found in MODELS), recursively."""
    if isinstance(value, list):
        return [_complete_defaults(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _complete_defaults(v) for k, v in value.items()}
    name = out.get("type")
    if not isinstance(name, str) or name not in MODELS:
        return out
    for pname, param in _init_parameters(MODELS.get(name)).items():
        if pname in out or pname == "type" or param.default is inspect.Parameter.empty:
            continue
        try:
            out[pname] = _complete_defaults(_to_json(param.default, pname))
        except ConfigError:  # a non-JSON default (a class, a callable) stays implicit
            continue
    return out


def _init_parameters(obj: Any) -> dict[str, inspect.Parameter]:
    """Keyword parameters of a class's constructor, following `**kwargs` up to the base classes."""
    classes = [c for c in obj.__mro__ if "__init__" in vars(c)] if inspect.isclass(obj) else [obj]
    params: dict[str, inspect.Parameter] = {}
    for cls in classes:
        if cls in (nn.Module, object):
            break
        try:
            signature = inspect.signature(cls.__init__ if inspect.isclass(cls) else cls)
        except (TypeError, ValueError):
            break
        var_keyword = False
        for pname, param in signature.parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                var_keyword = True
            elif param.kind is not inspect.Parameter.VAR_POSITIONAL and pname != "self":
                params.setdefault(pname, param)
        if not var_keyword:
            break
    return params


def _without_pretrained(cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy where the backbone's `pretrained` and every `init_cfg` are None."""
    cfg = copy.deepcopy(cfg)
    backbone = cfg.get("backbone")
    if isinstance(backbone, dict) and "pretrained" in backbone:
        backbone["pretrained"] = None

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "init_cfg" in node:
                node["init_cfg"] = None
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(cfg)
    return cfg


def _pair(value: Any, key: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigError(f"{key}: expected a positive int or (h, w), got {value!r}")
    return [int(value[0]), int(value[1])]


def slide_windows(
    img_hw: Sequence[int], crop_size: Sequence[int], stride: Sequence[int]
) -> list[tuple[int, int, int, int]]:
    """The `(y1, y2, x1, x2)` windows of slide inference over an `img_hw` image, row by row.

    As MMSegmentation: a window every `stride`, the last of a row/column shifted back to end at the
    border, none larger than the image.
    """
    (h_img, w_img), (h_crop, w_crop), (h_stride, w_stride) = img_hw, crop_size, stride
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, h_img)
            x2 = min(w_idx * w_stride + w_crop, w_img)
            windows.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return windows


def _check_test_cfg(test_cfg: dict | None) -> dict[str, Any]:
    if test_cfg is not None and not isinstance(test_cfg, dict):
        raise ConfigError(
            f"model.test_cfg: expected a mapping ({{mode: whole}} or {{mode: slide, crop_size, stride}}), "
            f"got {type(test_cfg).__name__}"
        )
    cfg = dict(test_cfg or {})
    mode = cfg.pop("mode", "whole")
    if mode == "whole":
        if cfg:
            raise ConfigError(f"model.test_cfg: unknown keys for mode 'whole': {', '.join(sorted(cfg))}")
        return {"mode": "whole"}
    if mode == "slide":
        missing = [k for k in ("crop_size", "stride") if k not in cfg]
        if missing:
            raise ConfigError(f"model.test_cfg: mode 'slide' needs {', '.join(missing)} (as (h, w))")
        crop_size = _pair(cfg.pop("crop_size"), "model.test_cfg.crop_size")
        stride = _pair(cfg.pop("stride"), "model.test_cfg.stride")
        if cfg:
            raise ConfigError(f"model.test_cfg: unknown keys for mode 'slide': {', '.join(sorted(cfg))}")
        return {"mode": "slide", "crop_size": crop_size, "stride": stride}
    raise ConfigError(f"model.test_cfg.mode: expected 'whole' or 'slide', got {mode!r}")


def _check_format_version(version: Any) -> int:
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError(
            f"model.format_version: expected an int (the config.json layout version, 1..{FORMAT_VERSION}), "
            f"got {version!r}"
        )
    if version > FORMAT_VERSION:
        raise ConfigError(
            f"model.format_version: {version} is not supported by this segaccel (it reads "
            f"1..{FORMAT_VERSION}); the model was saved by a newer segaccel: upgrade segaccel to load it"
        )
    if version < 1:
        raise ConfigError(f"model.format_version: expected 1..{FORMAT_VERSION}, got {version}")
    return version


def _check_num_classes(head: dict, key: str) -> None:
    """A head's `num_classes`, when given, is a positive int (not a bool, a float or a string)."""
    value = head.get("num_classes")
    if "num_classes" in head and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"{key}.num_classes: expected a positive int, got {value!r}")


_JSON_KINDS = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}
# What each config.json entry must be (None: may be null); the parts' own contents are checked when built.
_CONFIG_JSON_ENTRIES: dict[str, tuple[type | None, ...]] = {
    "backbone": (dict,),
    "decode_head": (dict,),
    "neck": (dict, None),
    "auxiliary_head": (dict, list, None),
    "data_preprocessor": (dict, None),
    "test_cfg": (dict, None),
    "id2label": (dict, None),
    "label2id": (dict, None),
    "palette": (list, None),
    "test_pipeline": (list, None),
    "format_version": (int,),
    "init_cfg": (dict, None),
}


def _json_kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _read_config_json(model_id: str, kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """`(True, the parsed config.json)` of a folder or a Hub repo (cache), `(False, None)` without one.

    Located as the Hub mixin does; when it cannot be found or downloaded here, the mixin looks for it
    again and reports the problem its own way.
    """
    if os.path.isdir(model_id):
        path = os.path.join(model_id, constants.CONFIG_NAME)
        if not os.path.isfile(path):
            return False, None
    else:
        hub_kwargs = {
            k: kwargs[k]
            for k in ("revision", "cache_dir", "force_download", "token", "local_files_only")
            if k in kwargs
        }
        try:
            path = hf_hub_download(repo_id=model_id, filename=constants.CONFIG_NAME, **hub_kwargs)
        except (OSError, EntryNotFoundError, ValueError):  # not found, offline, a bad repo id, ...
            return False, None
    with open(path, encoding="utf-8") as f:
        return True, json.load(f)


def _check_config_json(config: Any, where: str, given: dict[str, Any]) -> None:
    """A ConfigError naming `where` (the file) unless `config` has the layout `save_pretrained` writes.

    Entries the caller passes to `from_pretrained` (`given`) replace the file's and are not checked here.
    A foreign config (a transformers SegFormer's `model_type: segformer`, ...) is checked by its converter.
    """
    if not isinstance(config, dict):
        raise ConfigError(
            f'{where}: expected a JSON object describing the model ({{"backbone": {{...}}, '
            f'"decode_head": {{...}}, ...}}), got {_json_kind(config)}'
        )
    if format_of_config(config) is not None:
        return
    if "format_version" in config and "format_version" not in given:
        try:
            _check_format_version(config["format_version"])
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    missing = [k for k in ("backbone", "decode_head") if k not in config and k not in given]
    if missing:
        raise ConfigError(f"{where}: missing {' and '.join(missing)} (objects with a `type`)")
    for key, kinds in _CONFIG_JSON_ENTRIES.items():
        if key not in config or key in given:
            continue
        value = config[key]
        ok = any(
            value is None if kind is None else isinstance(value, kind) and not isinstance(value, bool)
            for kind in kinds
        )
        if not ok:
            names = [{dict: "an object", list: "an array", int: "an int"}.get(k, "null") for k in kinds]
            raise ConfigError(f"{where}: `{key}` must be {' or '.join(names)}, got {_json_kind(value)}")


def _check_id2label(id2label: dict | None, num_classes: int) -> dict[int, str] | None:
    """Int keys 0..num_classes-1 (JSON's string keys converted back), in order."""
    if id2label is None:
        return None
    if not isinstance(id2label, dict):
        raise ConfigError(f"model.id2label: expected a mapping, got {type(id2label).__name__}")
    try:
        id2label = {int(k): str(v) for k, v in id2label.items()}
    except ValueError as exc:
        raise ConfigError(f"model.id2label: keys must be class indices: {exc}") from exc
    if sorted(id2label) != list(range(num_classes)):
        raise ConfigError(
            f"model.id2label: expected keys 0..{num_classes - 1} for "
            f"decode_head.num_classes={num_classes}, got {sorted(id2label)}"
        )
    return dict(sorted(id2label.items()))


def _check_label2id(label2id: dict | None, id2label: dict[int, str] | None) -> dict[str, int] | None:
    if label2id is None:
        return None if id2label is None else {v: k for k, v in id2label.items()}
    if not isinstance(label2id, dict):
        raise ConfigError(f"model.label2id: expected a mapping, got {type(label2id).__name__}")
    bad = {k: v for k, v in label2id.items() if not isinstance(v, numbers.Integral) or isinstance(v, bool)}
    if bad:
        raise ConfigError(f"model.label2id: values must be class indices (ints), got {bad}")
    label2id = {str(k): int(v) for k, v in label2id.items()}
    if id2label is not None and any(id2label.get(i) != name for name, i in label2id.items()):
        raise ConfigError(f"model.label2id {label2id} does not match model.id2label {id2label}")
    return label2id


def _check_palette(palette: list | None) -> list[list[int]] | None:
    if palette is None:
        return None
    if not isinstance(palette, Sequence) or isinstance(palette, str):
        raise ConfigError(f"model.palette: expected a list of [r, g, b], got {type(palette).__name__}")
    out = []
    for i, colour in enumerate(palette):
        if (
            not isinstance(colour, Sequence)
            or len(colour) != 3
            or not all(
                isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour
            )
        ):
            raise ConfigError(f"model.palette[{i}]: expected [r, g, b] ints in 0..255, got {colour!r}")
        out.append([int(c) for c in colour])
    return out


def _check_pipeline(pipeline: list | None) -> list[dict] | None:
    if pipeline is None:
        return None
    pipeline = _to_json(pipeline, "model.test_pipeline")
    if not isinstance(pipeline, list):
        raise ConfigError(f"model.test_pipeline: expected a list of transform configs, got {pipeline!r}")
    for i, step in enumerate(pipeline):
        if not isinstance(step, dict) or "type" not in step:
            raise ConfigError(f"model.test_pipeline.{i}: expected a mapping with a `type`, got {step!r}")
    return pipeline


def _load_kwargs(
    model_kwargs: dict[str, Any], config: dict[str, Any], num_classes: int | None
) -> tuple[dict[str, Any], bool]:
    """Constructor arguments for `from_pretrained`: no pretrained pointers, the class count applied.

    Returns the arguments and whether the heads get a new class count.
    """
    kwargs = _without_pretrained(model_kwargs)
    saved = kwargs["decode_head"].get("num_classes")

    def from_config(key: str) -> bool:  # the mixin fills absent arguments from config.json
        value, saved_value = kwargs.get(key), config.get(key)
        if key == "id2label" and isinstance(value, dict):
            value = {str(k): v for k, v in value.items()}
        return value == saved_value

    if kwargs.get("id2label") is not None and not from_config("id2label"):
        if from_config("label2id"):  # new class names: the saved inverse mapping is stale
            kwargs["label2id"] = None
        if num_classes is None:
            num_classes = len(kwargs["id2label"])
    if num_classes is None or num_classes == saved:
        return kwargs, False
    kwargs["decode_head"] = {**kwargs["decode_head"], "num_classes": num_classes}
    aux = kwargs.get("auxiliary_head")
    if isinstance(aux, dict):
        kwargs["auxiliary_head"] = {**aux, "num_classes": num_classes}
    elif isinstance(aux, list):
        kwargs["auxiliary_head"] = [{**a, "num_classes": num_classes} for a in aux]
    # Class names and colours saved for the old classes no longer apply (unless given anew).
    for key in ("id2label", "label2id", "palette"):
        if kwargs.get(key) is not None and from_config(key):
            if key == "palette" and len(kwargs[key]) >= num_classes:
                continue
            kwargs[key] = None
    return kwargs, True
