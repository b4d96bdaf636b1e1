"""The one door for weights: `load_from:`, `--checkpoint` and `Segmentor.from_pretrained` read here.

They all accept the same sources:

- a weights file: `.safetensors`, or a pickle (`.bin`, `.pth`, `.pt`, ...) read by the restricted
  reader (`segaccel.convert.restricted_load`: nothing in the file runs; objects other than tensors and
  plain data become inert placeholders), a checkpoint's `state_dict` unwrapped (MMSegmentation 1.x
  files with mmengine's message hub and 0.x files, mmengine);
- a model folder: its `model.safetensors`, else its `pytorch_model.bin`;
- a Hub model id `org/name`, or `org/name@revision`: the same two files, downloaded or read from the
  Hugging Face cache (`HF_HUB_OFFLINE`, `HF_TOKEN` and the cache settings apply).

What wrote the weights (transformers, MMSegmentation, segaccel) is told by the table in
`checkpoint_formats.py`, from the `config.json` beside them (a file's own folder, a folder, a repo) and
from their key names; they are converted to our names before loading. This module only reads from the
Hub; pushing is `segaccel.hub`, which models never import.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from torch import nn

from segaccel.config import load_json_file
from segaccel.convert import is_transformers_segformer, mit_state_dict_from_transformers, read_state_dict
from segaccel.registry import ConfigError

from .checkpoint_formats import CheckpointFormat, format_of, format_of_config

logger = logging.getLogger(__name__)

WEIGHTS_NAMES = (constants.SAFETENSORS_SINGLE_FILE, constants.PYTORCH_WEIGHTS_NAME)
"""What a model folder or Hub repo holds its weights in, in order of preference."""
WEIGHTS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
HEAD_PREFIXES = ("decode_head.", "auxiliary_head.")
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"  # transformers' image processor settings
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --- where the weights are -----------------------------------------------------------------------
@dataclass(frozen=True)
class WeightsSource:
    """A local weights `file`, a local model `folder`, or a `hub` repo id (at `revision`)."""

    kind: Literal["file", "folder", "hub"]
    location: str
    revision: str | None = None

    @property
    def model_location(self) -> str:
        """The folder or repo id whose `config.json` describes the weights (a file's own folder)."""
        if self.kind == "file":
            return os.path.dirname(self.location) or "."
        return self.location


def weights_source(path: str | os.PathLike, revision: str | None = None) -> WeightsSource:
    """Tell a local file or folder from a Hub id (`org/name` or `org/name@revision`).

    A local path wins over a Hub id of the same spelling. Raises FileNotFoundError when `path` is
    neither an existing file or folder nor a Hub id.
    """
    text = os.fspath(path)
    local = os.path.expanduser(text)
    if os.path.isfile(local):
        return WeightsSource("file", local)
    if os.path.isdir(local):
        return WeightsSource("folder", local)
    repo_id, at, in_id = text.partition("@")
    if _is_hub_id(repo_id) and (in_id or not at):
        if in_id and revision is not None and in_id != revision:
            raise ValueError(f"{text}: the revision in the id ({in_id!r}) differs from revision={revision!r}")
        return WeightsSource("hub", repo_id, in_id or revision)
    raise FileNotFoundError(
        f"no weights file or model folder at {text}: no such file or folder, and not a Hub model id "
        "(org/name or org/name@revision)"
    )


def _is_hub_id(text: str) -> bool:
    looks_local = text.startswith((".", "~")) or text.endswith(WEIGHTS_SUFFIXES)
    return bool(_HUB_ID.match(text)) and not looks_local


def find_weights_file(source: WeightsSource, **hub_kwargs: Any) -> str:
    """The weights file of `source`: the file itself, or a folder's or repo's `model.safetensors`
    (else `pytorch_model.bin`). `hub_kwargs` go to `hf_hub_download` (`cache_dir`, `token`, ...).

    Raises FileNotFoundError saying what was tried.
    """
    if source.kind == "file":
        return source.location
    if source.kind == "folder":
        for name in WEIGHTS_NAMES:
            path = os.path.join(source.location, name)
            if os.path.isfile(path):
                return path
        raise FileNotFoundError(
            f"no weights file in {source.location} (expected a model.safetensors file or a folder holding "
            f"one, or its {constants.PYTORCH_WEIGHTS_NAME})"
        )
    try:
        try:
            return _hub_file(source, WEIGHTS_NAMES[0], hub_kwargs)
        except EntryNotFoundError as exc:  # not in the repo, or (offline) not in the cache
            try:
                return _hub_file(source, WEIGHTS_NAMES[1], hub_kwargs)
            except EntryNotFoundError:
                raise exc from None
    except Exception as err:  # not found, offline, no access, ...: say what was tried
        at = f"@{source.revision}" if source.revision else ""
        raise FileNotFoundError(
            f"no weights at {source.location}{at}: not a local file or folder, and the Hub model "
            f"{source.location!r} has no model.safetensors (or {constants.PYTORCH_WEIGHTS_NAME}) that "
            f"could be fetched ({type(err).__name__}: {err})"
        ) from err


def resolve_weights_file(path: str | os.PathLike, **hub_kwargs: Any) -> Path:
    """The local weights file `path` names: a file, a model folder's weights, or a Hub id's (downloaded).

    `hub_kwargs` (`revision`, `cache_dir`, `token`, `local_files_only`, `force_download`) go to
    `hf_hub_download`. Raises FileNotFoundError saying what was tried.
    """
    source = weights_source(path, hub_kwargs.pop("revision", None))
    return Path(find_weights_file(source, **hub_kwargs))


def read_model_json(source: WeightsSource, filename: str, **hub_kwargs: Any) -> dict | None:
    """A JSON file (`config.json`, `preprocessor_config.json`) beside the weights, or None without one.

    Looked up in a file's folder, a model folder, or the Hub repo (or, offline, its cache).
    """
    if source.kind == "hub":
        try:
            path = _hub_file(source, filename, hub_kwargs)
        except EntryNotFoundError:
            return None
    else:
        path = os.path.join(source.model_location, filename)
        if not os.path.isfile(path):
            return None
    return load_json_file(path)


def _hub_file(source: WeightsSource, filename: str, hub_kwargs: dict[str, Any]) -> str:
    return hf_hub_download(repo_id=source.location, filename=filename, revision=source.revision, **hub_kwargs)


# --- what the weights are ------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """Weights read from a source: the `file` read, its state dict in our names, and its `format`."""

    file: str
    state_dict: dict[str, torch.Tensor]
    format: CheckpointFormat


_UNREAD = object()


def read_checkpoint(source: WeightsSource, config: Any = _UNREAD, **hub_kwargs: Any) -> Checkpoint:
    """Find, read and convert the weights of `source` (safetensors, or pickles by the restricted reader).

    `config` is the `config.json` beside the weights when the caller has read it already (None: there
    is none); otherwise it is read here. `checkpoint_formats.format_of` says what wrote the weights.
    """
    file = find_weights_file(source, **hub_kwargs)
    if config is _UNREAD:
        try:
            config = read_model_json(source, constants.CONFIG_NAME, **hub_kwargs)
        except json.JSONDecodeError as exc:
            where = os.path.join(source.model_location, constants.CONFIG_NAME)
            raise ConfigError(f"{where}: not valid JSON ({exc})") from exc
    state_dict = read_state_dict(file)
    fmt = format_of(config, state_dict)
    if fmt.convert_state_dict is not None:
        state_dict = fmt.convert_state_dict(state_dict)
        logger.info("%s: %s weights, converted to segaccel's names", file, fmt.name)
    return Checkpoint(file=file, state_dict=state_dict, format=fmt)


# --- loading -------------------------------------------------------------------------------------
def load_pretrained_weights(
    model: nn.Module,
    path_or_repo_id: str | os.PathLike,
    *,
    strict: bool = False,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> str:
    """Load weights into a built model from a file, a model folder or a Hub id (`org/name[@revision]`).

    Any source and format of this module's docstring. `strict=False` (fine-tuning, `load_from:`) loads
    every matching weight and re-initialises head weights whose shape differs (another class count),
    logging which; `strict=True` (`--checkpoint`) requires an exact match. Returns the file read.
    """
    source = weights_source(path_or_repo_id, revision)
    hub_kwargs = dict(
        cache_dir=cache_dir, token=token, local_files_only=local_files_only, force_download=force_download
    )
    checkpoint = read_checkpoint(source, **hub_kwargs)
    load_checked_state_dict(
        model, checkpoint.state_dict, strict=strict, reinit_heads=not strict, source=checkpoint.file
    )
    logger.info("loaded weights from %s", checkpoint.file)
    return checkpoint.file


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = False) -> None:
    """`load_from:` (strict=False) and `--checkpoint` (strict=True): `load_pretrained_weights`."""
    load_pretrained_weights(model, path, strict=strict)


def load_checked_state_dict(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    strict: bool = True,
    reinit_heads: bool = False,
    source: str = "state_dict",
) -> None:
    """Load a state dict into `model`, reporting every missing, unexpected and mis-shaped key by name.

    `reinit_heads=True` skips head weights whose shape differs (a new class count) and logs them.
    With `strict=False`, missing and unexpected keys are logged instead of raising.
    """
    own = model.state_dict()
    reinit = check_state_dict(own, state_dict, strict=strict, reinit_heads=reinit_heads, source=source)
    kept = {k: v for k, v in state_dict.items() if k not in reinit and k in own}
    check_weight_values(own, kept, source)
    model.load_state_dict(kept, strict=False)


def check_state_dict(
    own: dict[str, torch.Tensor],
    state_dict: dict[str, torch.Tensor],
    strict: bool = True,
    reinit_heads: bool = False,
    source: str = "state_dict",
) -> list[str]:
    """Compare weights' names and shapes with a model's (`own`: its state dict, possibly on the meta
    device); raise naming every problem (see `load_checked_state_dict`). Returns the head weights
    to re-initialise (`reinit_heads`: shape differs)."""
    missing = _missing_keys(own, state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    mismatched = sorted(k for k in state_dict if k in own and state_dict[k].shape != own[k].shape)
    reinit = [k for k in mismatched if reinit_heads and k.startswith(HEAD_PREFIXES)]
    mismatched = [k for k in mismatched if k not in reinit]
    problems = []
    if missing:
        problems.append(f"missing keys (in the model, not in the weights): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys (in the weights, not in the model): {', '.join(unexpected)}")
    if mismatched:
        shapes = [
            f"{k}: weights {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched
        ]
        problems.append("shape mismatches: " + "; ".join(shapes))
    if mismatched or (strict and problems):
        hint = " (pass num_classes= to fine-tune to another class count)" if mismatched else ""
        raise RuntimeError(
            f"{source}: the weights do not match the model built from its config{hint}:\n  "
            + "\n  ".join(problems)
            + ("\n  Pass strict=False to load the matching keys anyway." if not mismatched else "")
        )
    if problems:
        logger.warning("%s: loaded non-strictly; %s", source, "; ".join(problems))
    if reinit:
        logger.warning(
            "%s: re-initialised for the new class count (shape differs): %s", source, ", ".join(reinit)
        )
    return reinit


def check_shapes_before_build(
    shell: dict[str, torch.Tensor],
    state_dict: dict[str, torch.Tensor],
    reinit_heads: bool = False,
    source: str = "state_dict",
) -> None:
    """Refuse weights whose shapes differ from a model's before the model is built for real.

    `shell` is the state dict of the model built on the meta device (shapes, no memory), so a
    config.json that asks for a layer the weights do not have (`num_classes: 100000000`, a wider
    head) is refused before anything is allocated for it. Names are checked after the real build.
    """
    common = {k: shell[k] for k in state_dict if k in shell}
    mismatched = [
        k
        for k in sorted(common)
        if state_dict[k].shape != common[k].shape and not (reinit_heads and k.startswith(HEAD_PREFIXES))
    ]
    if mismatched:
        check_state_dict(
            {k: common[k] for k in mismatched}, {k: state_dict[k] for k in mismatched}, source=source
        )


def _dtype_family(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "float"
    return "integer"


def check_weight_values(
    own: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor], source: str = "state_dict"
) -> None:
    """Refuse weights that are not what the model's tensors are: a float parameter stored as an
    integer or bool tensor (loading would silently cast it), or a NaN/infinite value, naming the tensors.

    A cast within a family (float16 -> float32, int32 -> int64) is allowed and logged.
    """
    wrong, casts = [], {}
    for k, v in state_dict.items():
        if k not in own:
            continue
        want, got = str(own[k].dtype).removeprefix("torch."), str(v.dtype).removeprefix("torch.")
        if _dtype_family(own[k].dtype) != _dtype_family(v.dtype):
            wrong.append(f"{k}: {got} in the file, {want} in the model")
        elif want != got:
            casts[f"{got} -> {want}"] = casts.get(f"{got} -> {want}", 0) + 1
    if wrong:
        shown = wrong[:8] + ([f"... and {len(wrong) - 8} more"] if len(wrong) > 8 else [])
        raise ValueError(
            f"{source}: {len(wrong)} tensor(s) are stored with a dtype of another kind than the model's "
            "(a float parameter read from integer or bool data would load as garbage); the file is damaged "
            "or not these weights:\n  " + "\n  ".join(shown)
        )
    if casts:
        logger.info(
            "%s: weights cast to the model's dtype: %s",
            source,
            ", ".join(f"{n} tensor(s) {pair}" for pair, n in casts.items()),
        )
    bad = []
    for k, v in state_dict.items():
        if k in own and v.is_floating_point() and v.numel():
            n = int((~torch.isfinite(v)).sum())
            if n:
                bad.append(f"{k}: {n} of {v.numel()} values")
    if bad:
        shown = bad[:8] + ([f"... and {len(bad) - 8} more"] if len(bad) > 8 else [])
        raise ValueError(
            f"{source}: {len(bad)} tensor(s) hold NaN or infinite values; such weights predict nothing "
            "meaningful (a diverged training run or a damaged file):\n  " + "\n  ".join(shown)
        )


def _missing_keys(own: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor]) -> list[str]:
    """Model keys absent from `loaded`; a key tied to a loaded one (shared storage) is not missing."""

    def storage(t: torch.Tensor) -> tuple:
        return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())

    present = {storage(t) for k, t in own.items() if k in loaded and t.numel() > 0}
    return sorted(
        k for k, t in own.items() if k not in loaded and (t.numel() == 0 or storage(t) not in present)
    )


# --- from_pretrained: foreign repos, dtype --------------------------------------------------------------
def model_config(
    source: WeightsSource, config: dict[str, Any] | None, model_kwargs: dict[str, Any], **hub_kwargs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`from_pretrained`'s arguments and config.json in our layout: a foreign repo's converted.

    A foreign repo has a `model_type` of `CHECKPOINT_FORMATS` in its config.json (a transformers
    SegFormer's `segformer`, ...); its config (and `preprocessor_config.json`) is converted. The Hub
    mixin fills `id2label`/`label2id` from the foreign config.json; those are replaced by the converted
    config, while arguments the caller gave (other values) still override it. Without a config.json,
    the caller's arguments must describe the model (`backbone=`, `decode_head=`, ...).
    """
    fmt = format_of_config(config)
    if fmt is None:
        if config is None and "backbone" not in model_kwargs:
            raise FileNotFoundError(
                f"{source.model_location}: no {constants.CONFIG_NAME} found; it describes the model to build "
                "(pass backbone=, decode_head=, ... to build one without it)"
            )
        return model_kwargs, config or {}
    preprocessor = read_model_json(source, PREPROCESSOR_CONFIG_NAME, **hub_kwargs)
    try:
        converted = fmt.convert_config(config, preprocessor)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{source.location}: cannot convert this {fmt.name} config: {exc}") from exc
    given = {k: v for k, v in model_kwargs.items() if k not in config or config[k] != v}
    logger.info(
        "%s: %s (model_type: %s); converting it on load", source.location, fmt.name, fmt.model_type
    )
    return {**converted, **given}, converted


def torch_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """`torch.float16`, `"float16"`, `"fp16"`, `"bf16"`, `"torch.bfloat16"`, ... → a floating torch dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        out = dtype
    else:
        name = str(dtype).removeprefix("torch.")
        name = {
            "fp16": "float16",
            "half": "float16",
            "bf16": "bfloat16",
            "fp32": "float32",
            "float": "float32",
            "fp64": "float64",
            "double": "float64",
        }.get(name, name)
        out = getattr(torch, name, None)
    if out is not None and (not isinstance(out, torch.dtype) or not out.is_floating_point):
        raise ValueError(f"dtype={dtype!r}: expected a floating torch dtype (torch.bfloat16, 'float16', ...)")
    return out


# --- a MiT backbone from a transformers encoder ---------------------------------------------------
def transformers_encoder(backbone: dict[str, Any] | None) -> str | None:
    """A MiT `pretrained` that names a transformers encoder (a Hub repo id or a folder), else None.

    A local weights file stays the backbone's own business (`MixVisionTransformer.load_pretrained`).
    """
    if not isinstance(backbone, dict) or backbone.get("type") != "MixVisionTransformer":
        return None
    pretrained = backbone.get("pretrained")
    if not isinstance(pretrained, str) or os.path.isfile(pretrained):
        return None
    return pretrained


def load_transformers_mit(backbone: nn.Module, repo_or_dir: str, **hub_kwargs: Any) -> None:
    """Initialise our `MixVisionTransformer` from a transformers SegFormer encoder (strictly).

    `repo_or_dir` is a Hub repo id such as `nvidia/mit-b2` (the ImageNet encoders, downloaded or
    read from the Hugging Face cache; `org/name@revision` pins one) or a local folder with a
    transformers SegFormer `config.json` and weights. The encoder weights of any SegFormer repo
    (classification or segmentation) work; its classifier or decode head is left out.
    """
    try:
        source = weights_source(repo_or_dir, hub_kwargs.pop("revision", None))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"model.backbone.pretrained: {exc}") from exc
    config = read_model_json(source, constants.CONFIG_NAME, **hub_kwargs) if source.kind != "file" else None
    if not is_transformers_segformer(config):
        raise ConfigError(
            f"model.backbone.pretrained: {repo_or_dir!r} is neither a local weights file nor a transformers "
            "SegFormer repo or folder (its config.json must say model_type: segformer)"
        )
    weights_file = find_weights_file(source, **hub_kwargs)
    state = mit_state_dict_from_transformers(read_state_dict(weights_file))
    result = backbone.load_state_dict(state, strict=False)
    own = backbone.state_dict()
    mismatched = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if result.missing_keys or result.unexpected_keys or mismatched:
        raise RuntimeError(
            f"model.backbone.pretrained: {repo_or_dir} does not match this MixVisionTransformer "
            f"(check arch/embed_dims/num_layers/num_heads against its config.json); missing keys: "
            f"{result.missing_keys[:8]}, unexpected keys: {result.unexpected_keys[:8]}, "
            f"shape mismatches: {mismatched[:8]}"
        )
    eps = getattr(backbone, "layer_norm_eps", None)
    if eps is not None and eps != 1e-5:
        logger.warning(
            "model.backbone: %s was trained with LayerNorm eps 1e-5 (transformers) but this backbone has "
            "layer_norm_eps=%s; set layer_norm_eps: 1.0e-5 to reproduce its features exactly",
            repo_or_dir,
            eps,
        )
    logger.info("initialised the backbone from %s (transformers SegFormer encoder weights)", repo_or_dir)
