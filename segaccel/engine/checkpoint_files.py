"""What is read from a training checkpoint folder, and how: nothing in it is ever run.

A checkpoint folder (`WORK_DIR/checkpoints/iter_<N>/`) may have been copied, downloaded or edited
since it was written, so `--resume` trusts none of its files:

- every pickle in it (`optimizer.bin`, `random_states_<rank>.pkl`, `segaccel_custom_<i>.pkl`,
  `scaler.pt`, any other `.pkl`/`.bin`/`.pt`/`.pth`/`.ckpt`) is first read by the restricted
  reader used for outside weights (`segaccel.convert.safe_pickle.restricted_load`: tensors,
  containers, plain values and plain numpy arrays; nothing in the file is imported or called),
  and a file holding anything else (a class, a function such as `os.system`) is refused, naming the
  file and what it asked for, before Accelerate opens any of them;
- the states segaccel registers itself (the LR schedule, the stream position:
  `segaccel_custom_<i>.pkl`, named so that Accelerate never loads them) and every process's RNG
  states (`random_states_<rank>.pkl`) are restored from that restricted read, never unpickled
  again; Accelerate restores the model (`model.safetensors`), the optimizer and the grad scaler,
  whose files it reads with `torch.load(weights_only=True)`;
- `segaccel_state.json` is plain JSON, checked field by field; `model.safetensors` is checked as
  weights from outside are (a valid file, every tensor of the model's dtype family, no NaN/inf).

A file the resume needs that is missing, unreadable or refused is a `CheckpointError` naming it and
saying what to do, so a resumed run is the exact continuation or does not start: it never goes on
silently without, say, the saved RNG states.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from segaccel.convert.safe_pickle import placeholder_names, restricted_load
from segaccel.models.weights import check_weight_values

STATE_FILE = "segaccel_state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.bin"
SCALER_FILE = "scaler.pt"
PICKLE_SUFFIXES = (".pkl", ".bin", ".pt", ".pth", ".ckpt")
_ZIP_MAGIC = b"PK\x03\x04"
TRUSTED_GLOBALS: frozenset[str] = frozenset()
"""Globals (`module.qualname`) a checkpoint pickle may name beyond tensors and containers; none."""
DCP_METADATA = ".metadata"
_DCP_CLASSES = (
    "metadata.Metadata",
    "metadata.MetadataIndex",
    "metadata.StorageMeta",
    "metadata.TensorProperties",
    "metadata.TensorStorageMetadata",
    "metadata.BytesStorageMetadata",
    "metadata.ChunkStorageMetadata",
    "metadata._MEM_FORMAT_ENCODING",
    "filesystem._StorageInfo",
)
_PATH_CLASSES = ("PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath", "Path")
DCP_TRUSTED_GLOBALS = frozenset(
    [f"torch.distributed.checkpoint.{name}" for name in _DCP_CLASSES]
    + [f"pathlib.{name}" for name in _PATH_CLASSES]
)
"""A sharded (FSDP) state folder's `.metadata`, which torch.distributed.checkpoint unpickles itself, may
name these dataclasses, enums and path classes (inert to build) and nothing else. Its `.distcp` data
files hold tensors (read by DCP with `weights_only=True`) and pickled non-tensor items, each checked by
`check_dcp_folder` and read through `engine.sharding.RestrictedLoadPlanner`."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from exactly; the message names the file and what to do."""


def rng_file(process_index: int) -> str:
    return f"random_states_{process_index}.pkl"


def custom_file(index: int) -> str:
    """Where segaccel saves its `index`-th registered state (not Accelerate's `custom_checkpoint_<i>.pkl`,
    which `accelerator.load_state` would unpickle unrestricted)."""
    return f"segaccel_custom_{index}.pkl"


LEGACY_CUSTOM = re.compile(r"^custom_checkpoint_(\d+)\.pkl$")


def _advice(path: Path) -> str:
    """What to do instead: another complete checkpoint beside this one, or a fresh start."""
    others = sorted(
        (p for p in path.parent.glob("iter_*") if p != path and (p / STATE_FILE).is_file()),
        key=lambda p: int(p.name.split("_")[-1]) if p.name.split("_")[-1].isdigit() else -1,
    )
    fresh = "start again without --resume"
    instead = f"resume from another checkpoint (--resume {others[-1]})" if others else fresh
    return f"{instead}, or restore this folder from a copy you trust"


def looks_like_pickle(path: Path) -> bool:
    """A file Accelerate or torch would unpickle: a pickle suffix, or pickle/zip magic bytes."""
    if path.suffix in PICKLE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:1] == b"\x80" or head == _ZIP_MAGIC


def read_checked_pickle(path: Path, checkpoint: Path | None = None) -> Any:
    """Read one pickle with the restricted reader; CheckpointError if it holds anything but tensors,
    containers, plain values and numpy arrays (or cannot be read)."""
    checkpoint = checkpoint or path.parent
    try:
        obj = restricted_load(path)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint file ({type(exc).__name__}: {exc}); it is damaged or was "
            f"not written by segaccel: {_advice(checkpoint)}"
        ) from exc
    names = sorted(placeholder_names(obj) - TRUSTED_GLOBALS)
    if path.name == DCP_METADATA:
        names = [n for n in names if n not in DCP_TRUSTED_GLOBALS]
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise CheckpointError(
            f"{path}: refused: the file asks to build or call {shown}, which a training state never "
            f"holds (only tensors, numbers, strings and containers); nothing of it was run. Do not resume "
            f"from a checkpoint you did not write: {_advice(checkpoint)}"
        )
    return obj


def check_checkpoint_files(
    path: Path, process_index: int, num_custom: int, needs_scaler: bool = False
) -> dict[str, Any]:
    """Check every pickle in checkpoint folder `path` (and its sub-folders) before anything is loaded.

    Files this process needs must be present: `model.safetensors`, `optimizer.bin`, its
    `random_states_<rank>.pkl`, `segaccel_custom_<i>.pkl` for each of `num_custom` registered
    states, and `scaler.pt` with `needs_scaler`. Returns the restricted reads by file name (the RNG
    states and custom states are restored from them).
    """
    path = Path(path)
    required = [rng_file(process_index), *map(custom_file, range(num_custom))]
    if not sharded_state(path):  # FSDP/DeepSpeed keep the model and optimizer in their own folders
        required[:0] = [MODEL_FILE, OPTIMIZER_FILE]
    if needs_scaler:
        required.append(SCALER_FILE)
    missing = [name for name in required if not (path / name).is_file()]
    legacy = sorted(p.name for p in path.iterdir() if LEGACY_CUSTOM.match(p.name))
    if legacy:
        raise CheckpointError(
            f"{path}: written by an earlier segaccel, which kept its states in {', '.join(legacy)}: "
            "Accelerate would unpickle those without restriction, so they are not loaded. If you wrote this "
            "checkpoint yourself, rename each custom_checkpoint_<i>.pkl to segaccel_custom_<i>.pkl (segaccel "
            f"then reads it with its restricted reader) and resume again; otherwise {_advice(path)}"
        )
    if missing:
        raise CheckpointError(
            f"{path}: incomplete checkpoint, missing {', '.join(missing)}; resuming without them would not "
            f"continue the run exactly: {_advice(path)}"
        )
    read: dict[str, Any] = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.name == STATE_FILE or file.suffix in (".safetensors", ".json", ".distcp"):
            continue
        if looks_like_pickle(file):
            read[str(file.relative_to(path))] = read_checked_pickle(file, path)
    for metadata in sorted(path.rglob(DCP_METADATA)):  # sharded states: their .metadata is checked above
        check_dcp_folder(metadata.parent, path)
    return read


def read_checked_bytes(value: io.BytesIO, name: str, checkpoint: Path | None = None) -> Any:
    """One non-tensor item of a sharded (DCP) state, read by the restricted reader; CheckpointError if
    it holds anything but tensors, containers and plain values (nothing of it is run)."""
    where = f"{checkpoint}: " if checkpoint else ""
    try:
        obj = restricted_load(value)
    except Exception as exc:
        raise CheckpointError(
            f"{where}the sharded state's item {name!r} is not readable ({type(exc).__name__}: {exc}); it is "
            "damaged or was not written by segaccel"
        ) from exc
    names = sorted(placeholder_names(obj) - TRUSTED_GLOBALS)
    if names:
        raise CheckpointError(
            f"{where}refused: the sharded state's item {name!r} asks to build or call "
            f"{', '.join(names[:5])}, which a training state never holds (only tensors, numbers, strings "
            "and containers); nothing of it was run. Do not resume from a checkpoint you did not write"
        )
    return obj


def check_dcp_folder(folder: Path, checkpoint: Path | None = None) -> None:
    """Check every non-tensor item of a `torch.distributed.checkpoint` folder with the restricted reader.

    DCP stores such items (the optimizer's param-group values, ...) as `torch.save` pickles inside the
    `.distcp` files and reads them back with `torch.load(weights_only=False)`; Accelerate's FSDP
    loading does so too. Each one is read here first, from the byte range `.metadata` gives (that
    file itself was checked by the restricted reader before), and refused if it holds anything else.
    """
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    checkpoint = checkpoint or folder
    try:
        metadata = FileSystemReader(str(folder)).read_metadata()
    except Exception as exc:
        raise CheckpointError(
            f"{folder / DCP_METADATA}: not a readable sharded-state index ({type(exc).__name__}: {exc}): "
            f"{_advice(checkpoint)}"
        ) from exc
    for index, info in (metadata.storage_data or {}).items():
        if not isinstance(metadata.state_dict_metadata.get(index.fqn), BytesStorageMetadata):
            continue
        if getattr(info, "transform_descriptors", None):
            raise CheckpointError(
                f"{folder}: the item {index.fqn!r} is stored transformed ({info.transform_descriptors}); "
                f"segaccel reads plain sharded states only: {_advice(checkpoint)}"
            )
        file = folder / info.relative_path
        try:
            with open(file, "rb") as f:
                f.seek(info.offset)
                data = f.read(info.length)
        except OSError as exc:
            raise CheckpointError(f"{file}: cannot be read ({exc}): {_advice(checkpoint)}") from exc
        if len(data) != info.length:
            raise CheckpointError(f"{file}: truncated (item {index.fqn!r}): {_advice(checkpoint)}")
        read_checked_bytes(io.BytesIO(data), index.fqn, checkpoint)


def sharded_state(path: Path) -> bool:
    """Whether a checkpoint keeps its model and optimizer in Accelerate's FSDP/DeepSpeed folders
    (`pytorch_model_fsdp_0/`, `pytorch_model/`, ...) or files (`pytorch_model_fsdp.bin`) instead of
    `model.safetensors` and `optimizer.bin`."""
    return any(p.name.startswith("pytorch_model") for p in Path(path).iterdir() if p.name != MODEL_FILE)


def restore_custom_states(objects: Sequence[Any], read: dict[str, Any], path: Path) -> None:
    """`obj.load_state_dict(state)` for each registered object, from the restricted reads."""
    for i, obj in enumerate(objects):
        state = read[custom_file(i)]
        try:
            obj.load_state_dict(state)
        except Exception as exc:
            raise CheckpointError(
                f"{path / custom_file(i)}: not the state of a {type(obj).__name__} ({type(exc).__name__}: "
                f"{exc}): {_advice(path)}"
            ) from exc


def restore_rng_states(states: Any, path: Path) -> None:
    """Set Python's, NumPy's, torch's (and the accelerator's) RNG states as `save_state` saved them.

    Accelerate only logs (at INFO) when it cannot; here it is an error, since the resumed run would
    no longer draw the numbers the uninterrupted one draws.
    """
    keys = ("random_state", "numpy_random_seed", "torch_manual_seed")
    if not isinstance(states, dict) or any(k not in states for k in keys):
        got = sorted(states) if isinstance(states, dict) else type(states).__name__
        raise CheckpointError(
            f"{path}: expected the RNG states {list(keys)}, got {got}: {_advice(path.parent)}"
        )
    try:
        random.setstate(_as_tuples(states["random_state"]))
        np.random.set_state(states["numpy_random_seed"])
        torch.set_rng_state(states["torch_manual_seed"])
        for key, value in states.items():
            device_type = key.removeprefix("torch_").removesuffix("_manual_seed")
            if key.startswith("torch_") and key.endswith("_manual_seed") and device_type:
                module = getattr(torch, device_type, None)
                if module is not None and getattr(module, "is_available", lambda: False)():
                    setter = getattr(module, "set_rng_state_all", None) or module.set_rng_state
                    setter(value)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: the RNG states cannot be restored ({type(exc).__name__}: {exc}): {_advice(path.parent)}"
        ) from exc


def _as_tuples(value: Any) -> Any:
    """Python's `random.setstate` wants tuples where a pickle round trip may leave lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


def check_model_file(path: Path, model: torch.nn.Module) -> None:
    """`model.safetensors` of a checkpoint: a valid file, its tensors of the model's dtype families and
    finite (`segaccel.models.weights.check_weight_values`), checked before Accelerate loads it."""
    file = Path(path) / MODEL_FILE
    try:
        weights = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{file}: not a valid safetensors file ({exc}); an interrupted copy or a damaged disk: "
            f"{_advice(Path(path))}"
        ) from exc
    own = model.state_dict()
    try:
        check_weight_values(own, weights, str(file))
    except ValueError as exc:
        raise CheckpointError(f"{exc}\n{_advice(Path(path))}") from exc


def read_state_file(path: Path) -> dict[str, Any]:
    """`segaccel_state.json` of a checkpoint folder, checked: a clear error if it is not one."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(
            f"{path} is not a complete segaccel checkpoint (no {STATE_FILE}); "
            "an interrupted write leaves no such folder, so this may be the wrong path"
        )
    try:
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{state_file}: not valid JSON ({exc}): {_advice(path)}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{state_file}: expected a JSON object, got {type(state).__name__}: {_advice(path)}"
        )
    iteration = state.get("iteration")
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise CheckpointError(
            f"{state_file}: `iteration` must be a whole number >= 0, got {iteration!r}: {_advice(path)}"
        )
    for key, kind in (("best", dict), ("config", dict), ("num_processes", int)):
        if state.get(key) is not None and not isinstance(state[key], kind):
            raise CheckpointError(
                f"{state_file}: `{key}` must be {'an object' if kind is dict else 'an int'}, got "
                f"{type(state[key]).__name__}: {_advice(path)}"
            )
    return state
