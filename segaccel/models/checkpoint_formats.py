"""Which library wrote a checkpoint, and how it becomes segaccel's: one row per format.

`weights.py` (the weights door) reads a checkpoint, then asks this table what it is:

- a row with a `model_type` matches a repo or folder whose `config.json` declares that `model_type`
  (transformers writes one: `segformer`, `mask2former`, `eomt`, ...). Such a row also converts the
  config (and the image processor's `preprocessor_config.json`) into our constructor arguments, so
  `Segmentor.from_pretrained` builds the model from a foreign repo;
- a row with `key_prefixes` matches a state dict holding a key with one of them (names only that
  library writes);
- anything else is segaccel's own layout, loaded as it is (MMSegmentation's module names are ours, so
  most of its model-zoo checkpoints need nothing; the row below handles the rest).

Rows are tried in order, config rows first. To read a new format, write its pure converters in
`segaccel/convert/` and add a row to `CHECKPOINT_FORMATS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from segaccel.convert import (
    convert_mmseg_state_dict,
    segformer_config_from_transformers,
    segformer_state_dict_from_transformers,
)
from segaccel.convert.eomt import eomt_config_from_transformers, eomt_state_dict_from_transformers
from segaccel.convert.mask2former import (
    mask2former_config_from_transformers,
    mask2former_state_dict_from_transformers,
)

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class CheckpointFormat:
    """One library's checkpoint layout.

    Args:
        name: what the log says the checkpoint is ("transformers SegFormer").
        model_type: the `model_type` its `config.json` declares, or None.
        key_prefixes: state-dict key prefixes that only this format writes.
        convert_state_dict: its state dict → ours (None: already ours).
        convert_config: `(config.json, preprocessor_config.json or None)` → `Segmentor` arguments, for
            formats whose config.json is not ours (those with a `model_type`).
    """

    name: str
    model_type: str | None = None
    key_prefixes: tuple[str, ...] = ()
    convert_state_dict: Callable[[Mapping[str, torch.Tensor]], StateDict] | None = None
    convert_config: Callable[[Mapping[str, Any], Mapping[str, Any] | None], dict[str, Any]] | None = None


TRANSFORMERS_SEGFORMER = CheckpointFormat(
    name="transformers SegFormer",
    model_type="segformer",
    convert_state_dict=segformer_state_dict_from_transformers,
    convert_config=segformer_config_from_transformers,
)
TRANSFORMERS_MASK2FORMER = CheckpointFormat(
    name="transformers Mask2Former",
    model_type="mask2former",
    convert_state_dict=mask2former_state_dict_from_transformers,
    convert_config=mask2former_config_from_transformers,
)
TRANSFORMERS_EOMT = CheckpointFormat(
    name="transformers EoMT",
    model_type="eomt",
    convert_state_dict=eomt_state_dict_from_transformers,
    convert_config=eomt_config_from_transformers,
)
MMSEGMENTATION = CheckpointFormat(
    # a DistributedDataParallel `module.` prefix, or the data preprocessor's mean/std saved as weights
    name="MMSegmentation",
    key_prefixes=("module.", "data_preprocessor."),
    convert_state_dict=convert_mmseg_state_dict,
)
SEGACCEL = CheckpointFormat(name="segaccel")

CHECKPOINT_FORMATS: tuple[CheckpointFormat, ...] = (
    TRANSFORMERS_SEGFORMER,
    TRANSFORMERS_MASK2FORMER,
    TRANSFORMERS_EOMT,
    MMSEGMENTATION,
)
"""The foreign formats, in the order they are tried (segaccel's own is the fallback)."""


def format_of_config(config: Any) -> CheckpointFormat | None:
    """The foreign format whose `model_type` a `config.json` declares; None for ours (or no config)."""
    model_type = config.get("model_type") if isinstance(config, Mapping) else None
    if model_type is None:
        return None
    return next((f for f in CHECKPOINT_FORMATS if f.model_type == model_type), None)


def format_of(config: Any, state_dict: Mapping[str, torch.Tensor]) -> CheckpointFormat:
    """What wrote a checkpoint: by its `config.json` (None when there is none), else by its key names."""
    by_config = format_of_config(config)
    if by_config is not None:
        return by_config
    for fmt in CHECKPOINT_FORMATS:
        if fmt.key_prefixes and any(key.startswith(fmt.key_prefixes) for key in state_dict):
            return fmt
    return SEGACCEL
