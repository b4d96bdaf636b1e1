"""Data structures that travel between the data pipeline, the model and the metric.

`PixelData` holds one per-pixel tensor (a label map, logits) of shape `(C, H, W)`;
`SegDataSample` holds the metainfo of one image plus its `gt_sem_seg`, `pred_sem_seg` and
`seg_logits`, as in MMSegmentation 1.x.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

DATA_FIELDS = ("gt_sem_seg", "pred_sem_seg", "seg_logits")


class PixelData:
    """A per-pixel tensor of shape `(C, H, W)`; a 2-D `(H, W)` tensor is stored as `(1, H, W)`."""

    def __init__(self, data: torch.Tensor, **metainfo: Any) -> None:
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"PixelData.data must be a torch.Tensor, got {type(data).__name__}")
        if data.dim() == 2:
            data = data.unsqueeze(0)
        elif data.dim() != 3:
            raise ValueError(
                f"PixelData.data must be 2-D (H, W) or 3-D (C, H, W), got a {data.dim()}-D tensor "
                f"of shape {tuple(data.shape)}"
            )
        self.data = data
        self.metainfo = dict(metainfo)

    @property
    def shape(self) -> tuple[int, int]:
        """The spatial size `(H, W)`."""
        return tuple(self.data.shape[-2:])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PixelData:
        return PixelData(self.data.to(device, non_blocking=non_blocking), **self.metainfo)

    def cpu(self) -> PixelData:
        return self.to("cpu")

    def numpy(self):
        return self.data.detach().cpu().numpy()

    def __repr__(self) -> str:
        data = self.data
        return f"PixelData(shape={tuple(data.shape)}, dtype={data.dtype}, device={data.device})"


class SegDataSample:
    """Metainfo of one image plus its ground truth and predictions.

    Metainfo keys (`ori_shape`, `img_shape`, `pad_shape`, `scale_factor`, `flip`, ...) are also
    readable as attributes, so `sample.ori_shape` works as in MMSegmentation.
    """

    def __init__(
        self,
        metainfo: dict[str, Any] | None = None,
        gt_sem_seg: PixelData | None = None,
        pred_sem_seg: PixelData | None = None,
        seg_logits: PixelData | None = None,
    ) -> None:
        object.__setattr__(self, "_metainfo", dict(metainfo or {}))
        object.__setattr__(self, "_fields", {})
        fields = {"gt_sem_seg": gt_sem_seg, "pred_sem_seg": pred_sem_seg, "seg_logits": seg_logits}
        for name, value in fields.items():
            if value is not None:
                setattr(self, name, value)

    # --- metainfo -------------------------------------------------------------------------------
    @property
    def metainfo(self) -> dict[str, Any]:
        return self._metainfo

    def set_metainfo(self, metainfo: dict[str, Any]) -> None:
        self._metainfo.update(metainfo)

    # --- data fields ----------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name in DATA_FIELDS:
            if not isinstance(value, PixelData):
                raise TypeError(f"SegDataSample.{name} must be a PixelData, got {type(value).__name__}")
            self._fields[name] = value
        elif name in self._metainfo:
            self._metainfo[name] = value
        else:
            raise AttributeError(
                f"SegDataSample has no field {name!r}; data fields are {DATA_FIELDS}, "
                "metainfo is set with set_metainfo()"
            )

    def __getattr__(self, name: str) -> Any:
        fields = object.__getattribute__(self, "_fields")
        if name in fields:
            return fields[name]
        metainfo = object.__getattribute__(self, "_metainfo")
        if name in metainfo:
            return metainfo[name]
        raise AttributeError(f"SegDataSample has no field or metainfo {name!r}")

    def __delattr__(self, name: str) -> None:
        if name in self._fields:
            del self._fields[name]
        else:
            raise AttributeError(name)

    def __contains__(self, name: str) -> bool:
        return name in self._fields or name in self._metainfo

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in self else default

    def keys(self) -> Iterator[str]:
        """Names of the data fields that are set."""
        return iter(self._fields)

    # --- devices --------------------------------------------------------------------------------
    def to(self, device: torch.device | str, non_blocking: bool = False) -> SegDataSample:
        """A copy with every data field on `device` (metainfo is shared by value)."""
        moved = {k: v.to(device, non_blocking=non_blocking) for k, v in self._fields.items()}
        return SegDataSample(dict(self._metainfo), **moved)

    def cpu(self) -> SegDataSample:
        return self.to("cpu")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._fields.items())
        return f"SegDataSample(metainfo={self._metainfo!r}, {fields})"
