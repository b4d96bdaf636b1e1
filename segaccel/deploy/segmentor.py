"""`ExportedSegmentor`: an exported model folder that segments like `Segmentor`, without model code.

It has the parts of `Segmentor` that inference touches (`data_preprocessor`, `predict`, `test_cfg`,
`test_pipeline`, class names), so `segaccel.inference.inference_model`, the test loop of
`scripts/test.py` and the demo run it exactly as they run the PyTorch model:

    from segaccel.deploy import ExportedSegmentor
    from segaccel.inference import inference_model

    model = ExportedSegmentor.from_pretrained("exported/segformer-b0")   # a folder or a Hub repo id
    sample = inference_model(model, "street.jpg")                        # pred_sem_seg at the image's size

It is an `nn.Module` (without parameters) only so that the loops can move it and switch its mode.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segaccel.deploy import inference as deploy_inference
from segaccel.deploy.backends import make_backend
from segaccel.deploy.config import ExportedConfig, check_test_cfg
from segaccel.deploy.preprocess import ExportedPreProcessor
from segaccel.structures import SegDataSample

ALLOW_PATTERNS = ["config.json", "config.yaml", "metrics.json", "model.onnx", "model.onnx.data", "model.pt2"]


class ExportedSegmentor(nn.Module):
    """An exported graph (onnxruntime or torch.export) with its pre- and post-processing.

    Args:
        folder: an exported model folder (`config.json` + `model.onnx` or `model.pt2`).
        providers: onnxruntime execution providers (default: CUDA when available, then CPU).
        threads: onnxruntime `intra_op_num_threads`.
        device: where an ExportedProgram runs (default CPU).
        crops_per_batch: slide windows per graph call (memory is bounded by these crops).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        device: str | torch.device | None = None,
        crops_per_batch: int = 4,
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.export_config = ExportedConfig.read(self.folder)
        cfg = self.export_config
        self.backend = make_backend(
            cfg.format, self.folder / cfg.file, providers=providers, threads=threads, device=device
        )
        self.data_preprocessor = ExportedPreProcessor(
            channels=int((cfg.raw.get("export") or {}).get("in_channels", 3)),
            test_size=cfg.test_size,
            test_size_divisor=cfg.test_size_divisor,
        )
        self.test_cfg = cfg.test_cfg
        self.id2label = cfg.id2label
        inverse = None if cfg.id2label is None else {v: k for k, v in cfg.id2label.items()}
        self.label2id = cfg.label2id or inverse
        self.palette = cfg.palette
        self.test_pipeline = cfg.test_pipeline
        self.crops_per_batch = crops_per_batch

    @classmethod
    def from_pretrained(
        cls, folder_or_repo_id: str | os.PathLike, *, revision: str | None = None, **kwargs: Any
    ) -> ExportedSegmentor:
        """Load an exported folder, or download one from the Hub (its config.json and graph)."""
        source = str(folder_or_repo_id)
        if os.path.isdir(source):
            return cls(source, **kwargs)
        if source.startswith(("/", "./", "../", "~")):
            raise FileNotFoundError(f"no exported model folder at {source}")
        from huggingface_hub import snapshot_download

        return cls(snapshot_download(source, revision=revision, allow_patterns=ALLOW_PATTERNS), **kwargs)

    # --- what Segmentor also has --------------------------------------------------------------------
    @property
    def test_cfg(self) -> dict[str, Any]:
        """`{"mode": "whole"}` or `{"mode": "slide", "crop_size": [h, w], "stride": [h, w]}`."""
        return self._test_cfg

    @test_cfg.setter
    def test_cfg(self, value: dict | None) -> None:
        self._test_cfg = check_test_cfg(value, "test_cfg")

    @property
    def num_classes(self) -> int:
        return self.export_config.num_classes

    @property
    def out_channels(self) -> int:
        return self.export_config.out_channels

    @property
    def align_corners(self) -> bool:
        return self.export_config.align_corners

    @property
    def threshold(self) -> float | None:
        return self.export_config.threshold

    @property
    def min_input_size(self) -> tuple[int, int] | None:
        """The smallest `(h, w)` the graph is run at; smaller inputs are padded (mask 0) up to it.

        The network's own minimum, recorded at export (the PyTorch model pads to the same). An
        ExportedProgram also checks the traced range of its input (`export.input_range`), which can
        start higher: there the larger of the two is used (an ONNX graph runs below its range).
        """
        cfg = self.export_config
        low = cfg.min_input_size or (1, 1)
        if cfg.format == "exported-program":
            traced = [int((cfg.input_range.get(k) or [1])[0] or 1) for k in ("height", "width")]
            low = (max(low[0], traced[0]), max(low[1], traced[1]))
        return None if low == (1, 1) else low

    @property
    def config(self) -> dict[str, Any]:
        """The exported folder's `config.json`."""
        return self.export_config.raw

    # --- inference ----------------------------------------------------------------------------------
    def forward(
        self, inputs: torch.Tensor, data_samples: list[SegDataSample] | None = None, mode: str = "predict"
    ) -> list[SegDataSample] | torch.Tensor:
        """`mode="predict"` → SegDataSamples; `"tensor"` → logits `(N, out_channels, H, W)` of the batch."""
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            return self.inference(inputs, [s.metainfo for s in data_samples] if data_samples else None)
        raise ValueError(f"ExportedSegmentor only predicts: mode must be 'predict' or 'tensor', got {mode!r}")

    @torch.no_grad()
    def predict(
        self, inputs: torch.Tensor, data_samples: list[SegDataSample] | None = None
    ) -> list[SegDataSample]:
        """Segment a uint8 batch from `data_preprocessor`; samples get `seg_logits`/`pred_sem_seg` at
        their `ori_shape` (without samples, every image is taken as unpadded and at its original size)."""
        if data_samples is None:
            hw = tuple(inputs.shape[-2:])
            meta = {"ori_shape": hw, "img_shape": hw, "pad_shape": hw, "padding_size": (0, 0, 0, 0)}
            data_samples = [SegDataSample(metainfo=meta) for _ in range(inputs.shape[0])]
        seg_logits = self.inference(inputs, [sample.metainfo for sample in data_samples])
        return deploy_inference.postprocess(
            seg_logits, data_samples, align_corners=self.align_corners, threshold=self.threshold
        )

    @torch.no_grad()
    def inference(self, inputs: torch.Tensor, batch_img_metas: list[dict] | None = None) -> torch.Tensor:
        """float32 logits `(N, out_channels, H, W)` of a uint8 `(N, C, H, W)` batch, whole or slide."""
        if not isinstance(inputs, torch.Tensor) or inputs.dtype != torch.uint8 or inputs.dim() != 4:
            got = (tuple(inputs.shape), inputs.dtype) if isinstance(inputs, torch.Tensor) else type(inputs)
            raise ValueError(
                f"an exported model takes the uint8 (N, C, H, W) batch of its data_preprocessor, got {got}"
            )
        n, _, h, w = inputs.shape
        if batch_img_metas is None:
            batch_img_metas = [{"img_shape": (h, w)}] * n
        if len(batch_img_metas) != n:
            raise ValueError(f"{n} inputs but {len(batch_img_metas)} image metas")
        inputs = inputs.cpu()
        mask = deploy_inference.padding_mask((n, h, w), batch_img_metas)
        cfg = self.test_cfg
        if cfg["mode"] == "slide":
            return deploy_inference.slide_inference(
                self.backend,
                inputs,
                mask,
                cfg["crop_size"],
                cfg["stride"],
                self.out_channels,
                min_hw=self.min_input_size,
                crops_per_batch=self.crops_per_batch,
            )
        return deploy_inference.whole_inference(self.backend, inputs, mask, self.min_input_size)

    def extra_repr(self) -> str:
        cfg = self.export_config
        return (
            f"folder={str(self.folder)!r}, format={cfg.format!r}, dtype={cfg.dtype!r}, "
            f"test_cfg={self.test_cfg}"
        )
