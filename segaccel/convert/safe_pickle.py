"""A restricted reader for torch pickles that come from outside: nothing in the file is ever called.

`torch.load(weights_only=True)` refuses whole files as soon as they hold one object it does not know,
such as mmengine's `HistoryBuffer` (the message hub of every MMSegmentation 1.x checkpoint) or numpy
scalars. `restricted_load` reads such files anyway, without mmengine, mmcv or any other library:

- tensors, `nn.Parameter`s, `torch.Size`, dtypes, devices and layouts are rebuilt by torch's own
  tensor rebuild functions, called through checking wrappers (storages must be storages; backward
  hooks and Python attributes of pickled tensors are dropped);
- containers and plain values (dict, OrderedDict, list, tuple, set, str, bytes, numbers, bool, None)
  are kept;
- numpy arrays and scalars of plain dtypes (bool, integers, floats, complex, str, bytes) are rebuilt
  from their raw bytes by `numpy.frombuffer` (never by numpy's pickle hooks);
- every other global the pickle names (a class, a function, `os.system`, ...) becomes an inert
  placeholder: a `PickledObject` subclass that records the module and name, the arguments it would
  have been called with, and the state, items and list items it would have received. Its class is
  never imported and nothing of it is ever called.

    ckpt = restricted_load("iter_160000.pth")  # any torch.save file (zip or legacy)
    ckpt["state_dict"]                         # real tensors
    ckpt["message_hub"]                        # a dict whose values may be PickledObjects
    placeholder_names(ckpt)                    # {'mmengine.logging.history_buffer.HistoryBuffer', ...}

Plain pickles (`pickle.dump`, not `torch.save`) are read the same way.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import os
import pickle
import re
import types
import zipfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import torch

__all__ = ["PickledObject", "RestrictedUnpickler", "is_placeholder", "placeholder_names", "restricted_load"]


# --- placeholders -------------------------------------------------------------------------------
class PickledObject:
    """What a pickle described but the restricted reader did not rebuild. Inert: it only records.

    Class attributes `module` and `qualname` name the global the pickle referred to (for example
    `mmengine.logging.history_buffer` / `HistoryBuffer`). Instances record `args` and `kwargs` (of
    the call or `__new__` the pickle asked for), `state` (what `__setstate__` would have received),
    `items` (`obj[key] = value` assignments) and `listitems` (appends).
    """

    module: str = ""
    qualname: str = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.listitems = args, kwargs, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # the arguments are kept by __new__
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.listitems.append(value)

    def extend(self, values: Any) -> None:
        self.listitems.extend(values)

    def __call__(self, *args: Any, **kwargs: Any) -> PickledObject:
        """Calling a placeholder (the pickle used one as a function) gives another placeholder."""
        return _placeholder_class(self.module, f"{self.qualname}(...)")(*args, **kwargs)

    @property
    def name(self) -> str:
        """`module.qualname` of the global the pickle referred to."""
        return f"{self.module}.{self.qualname}" if self.module else self.qualname

    def __repr__(self) -> str:
        return f"<PickledObject {self.name}>"


_PLACEHOLDER_CLASSES: dict[tuple[str, str], type[PickledObject]] = {}


def _placeholder_class(module: str, qualname: str) -> type[PickledObject]:
    """One placeholder class per pickled global; a real class (pickle's NEWOBJ wants a type)."""
    key = (str(module), str(qualname))
    if key not in _PLACEHOLDER_CLASSES:
        _PLACEHOLDER_CLASSES[key] = type(
            "PickledObject", (PickledObject,), {"module": key[0], "qualname": key[1], "__slots__": ()}
        )
    return _PLACEHOLDER_CLASSES[key]


def is_placeholder(obj: Any) -> bool:
    """True for the placeholders `restricted_load` puts where the pickle held other objects."""
    return isinstance(obj, PickledObject) or (isinstance(obj, type) and issubclass(obj, PickledObject))


def placeholder_names(obj: Any) -> set[str]:
    """The `module.qualname` of every placeholder inside `obj` (containers and placeholders walked)."""
    found: set[str] = set()
    for item in _walk(obj):
        if is_placeholder(item):
            found.add(PickledObject.name.fget(item) if isinstance(item, PickledObject) else _class_name(item))
    return found


def _class_name(cls: type[PickledObject]) -> str:
    return f"{cls.module}.{cls.qualname}" if cls.module else cls.qualname


def _walk(obj: Any) -> Iterator[Any]:
    seen: set[int] = set()
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, PickledObject):
            stack.extend([item.args, item.kwargs, item.state, item.items, item.listitems])


# --- numpy, rebuilt from raw bytes ---------------------------------------------------------------
class _NumpyDtype(PickledObject):
    """`numpy.dtype(descr, align, copy)` + its `__setstate__` tuple; decoded by `_decode_dtype`."""

    module, qualname = "numpy", "dtype"


class _NumpyArray(PickledObject):
    """`numpy.core.multiarray._reconstruct(ndarray, shape, b)` + `(version, shape, dtype, fortran, raw)`."""

    module, qualname = "numpy.core.multiarray", "_reconstruct"


class _NumpyScalar(PickledObject):
    """`numpy.core.multiarray.scalar(dtype, raw)`."""

    module, qualname = "numpy.core.multiarray", "scalar"


class _NumpyNdarray(PickledObject):
    """Stands for `numpy.ndarray` as the `subtype` argument of `_reconstruct`."""

    module, qualname = "numpy", "ndarray"


_PLAIN_DESCR = re.compile(
    r"^[<>|=]?(?:b1|\?|[iu][1248]|f[248]|c(?:8|16)|[US]\d*|bool|u?int(?:8|16|32|64)|float(?:16|32|64)|"
    r"complex(?:64|128))$"
)


def _decode_dtype(obj: Any) -> np.dtype | None:
    """A plain numpy dtype from a `_NumpyDtype` record, or None (object, structured or unknown dtypes)."""
    if not isinstance(obj, _NumpyDtype) or not obj.args or not isinstance(obj.args[0], str):
        return None
    descr = obj.args[0]
    if not _PLAIN_DESCR.match(descr):
        return None
    state = obj.state if isinstance(obj.state, tuple) else ()
    byteorder = state[1] if len(state) > 1 and state[1] in ("<", ">", "|", "=") else "="
    if len(state) > 4 and (state[2] is not None or state[3] is not None or state[4] is not None):
        return None  # sub-array or structured dtype
    if descr.lstrip("<>|=") in ("U", "S"):
        elsize = state[5] if len(state) > 5 and isinstance(state[5], int) and state[5] > 0 else None
        if elsize is None:
            return None
        descr = f"{descr}{elsize // 4 if descr.endswith('U') else elsize}"
    dtype = np.dtype(descr)
    if dtype.kind in "OVM":
        return None
    if byteorder in ("<", ">") and dtype.itemsize > 1 and dtype.kind != "S":
        dtype = dtype.newbyteorder(byteorder)
    return dtype


def _decode_numpy(obj: Any) -> Any:
    """A real numpy array/scalar for a decodable record, else `obj` unchanged."""
    if isinstance(obj, _NumpyArray):
        if len(obj.args) < 1 or not isinstance(obj.args[0], type) or obj.args[0] is not _NumpyNdarray:
            return obj  # a subclass of ndarray (masked arrays, ...): left as a placeholder
        state = obj.state
        if not isinstance(state, tuple) or len(state) != 5:
            return obj
        _, shape, dtype_record, fortran, raw = state
        dtype = _decode_dtype(dtype_record)
        if dtype is None or not isinstance(raw, (bytes, bytearray)) or not isinstance(shape, tuple):
            return obj
        if not all(isinstance(s, int) and s >= 0 for s in shape):
            return obj
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if len(raw) != count * dtype.itemsize:
            return obj
        array = np.frombuffer(bytes(raw), dtype=dtype, count=count)
        return array.reshape(shape, order="F" if fortran else "C").copy(order="K")
    if isinstance(obj, _NumpyScalar):
        if len(obj.args) != 2:
            return obj
        dtype = _decode_dtype(obj.args[0])
        raw = obj.args[1]
        if dtype is None or not isinstance(raw, (bytes, bytearray)) or len(raw) != dtype.itemsize:
            return obj
        return np.frombuffer(bytes(raw), dtype=dtype, count=1).copy()[0]
    if isinstance(obj, _NumpyDtype):
        dtype = _decode_dtype(obj)
        return obj if dtype is None else dtype
    return obj


def _finalize(obj: Any, memo: dict[int, Any]) -> Any:
    """Replace decodable numpy records by real numpy values, in place where containers allow it."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, (_NumpyArray, _NumpyScalar, _NumpyDtype)):
        decoded = _decode_numpy(obj)
        memo[key] = decoded
        if decoded is obj:  # undecodable: still walk what it holds
            _finalize_placeholder(obj, memo)
        return decoded
    memo[key] = obj
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _finalize(obj[k], memo)
    elif isinstance(obj, list):
        obj[:] = [_finalize(v, memo) for v in obj]
    elif isinstance(obj, tuple) and not isinstance(obj, torch.Size):
        new = tuple(_finalize(v, memo) for v in obj)
        if any(a is not b for a, b in zip(new, obj)):
            new = type(obj)(*new) if hasattr(obj, "_fields") else new  # namedtuples are placeholders anyway
            memo[key] = new
            return new
    elif isinstance(obj, PickledObject):
        _finalize_placeholder(obj, memo)
    return obj


def _finalize_placeholder(obj: PickledObject, memo: dict[int, Any]) -> None:
    obj.args = _finalize(obj.args, memo)
    obj.kwargs = _finalize(obj.kwargs, memo)
    obj.state = _finalize(obj.state, memo)
    obj.items = _finalize(obj.items, memo)
    obj.listitems = _finalize(obj.listitems, memo)


# --- torch, through checking wrappers ------------------------------------------------------------
def _check_storage(storage: Any) -> None:
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"restricted_load: a tensor's storage is a {type(storage).__name__}")


def _rebuild_tensor(storage: Any, storage_offset: int, size: tuple, stride: tuple) -> torch.Tensor:
    _check_storage(storage)
    return torch._utils._rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: int,
    size: tuple,
    stride: tuple,
    requires_grad: bool,
    backward_hooks: Any,
    metadata: Any = None,
) -> torch.Tensor:
    """torch's `_rebuild_tensor_v2` without backward hooks (they would be callables from the file)."""
    _check_storage(storage)
    if not (isinstance(metadata, dict) and all(isinstance(v, bool) for v in metadata.values())):
        metadata = None
    return torch._utils._rebuild_tensor_v2(
        storage, storage_offset, size, stride, bool(requires_grad), collections.OrderedDict(), metadata
    )


def _rebuild_parameter(data: Any, requires_grad: bool, backward_hooks: Any, *state: Any) -> torch.Tensor:
    """An `nn.Parameter` around a rebuilt tensor (hooks and Python attributes dropped)."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"restricted_load: a Parameter's data is a {type(data).__name__}")
    return torch.nn.Parameter(data, bool(requires_grad))


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> torch.Tensor:
    """torch's tensor-subclass rebuild, for plain tensors and parameters only (state dropped)."""
    if func not in _TENSOR_REBUILDERS or new_type not in (torch.Tensor, torch.nn.Parameter):
        return _placeholder_class("torch._tensor", "_rebuild_from_type_v2")(func, new_type, args, state)
    tensor = func(*args)
    if new_type is torch.nn.Parameter and not isinstance(tensor, torch.nn.Parameter):
        tensor = torch.nn.Parameter(tensor)
    return tensor


_TENSOR_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_parameter)


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """How protocol-2 pickles spell `bytes`: `_codecs.encode(str, 'latin1')`; text codecs only."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise pickle.UnpicklingError(f"restricted_load: _codecs.encode({type(obj).__name__}, {encoding!r})")
    return codecs.encode(obj, encoding, "strict")


_SAFE_FACTORIES = (list, dict, set, int, float, str, tuple, bytes)


def _defaultdict(default_factory: Any = None, *args: Any) -> collections.defaultdict:
    """A defaultdict whose factory is a plain type (any other factory is dropped)."""
    factory = default_factory if default_factory in _SAFE_FACTORIES else None
    return collections.defaultdict(factory, *args)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): _defaultdict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "tuple"): tuple,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "complex"): complex,
    ("builtins", "str"): str,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "bool"): bool,
    ("builtins", "slice"): slice,
    ("builtins", "range"): range,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
    ("numpy", "dtype"): _NumpyDtype,
    ("numpy", "ndarray"): _NumpyNdarray,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _NumpyArray
    _ALLOWED[(_module, "scalar")] = _NumpyScalar


def _allowed(module: str, name: str) -> Any:
    found = _ALLOWED.get((module, name))
    if found is not None:
        return found
    if module == "torch":  # dtypes (torch.float32), layouts and memory formats are plain values
        value = getattr(torch, name, None) if name.isidentifier() and not name.startswith("_") else None
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
            return value
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` never imports: allowed globals or placeholders."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol-2 (Python 2) spellings
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = _allowed(module, name)
        return found if found is not None else _placeholder_class(module, name)


# torch.load(pickle_module=...) wants a module with `Unpickler` and `load`.
_pickle_module = types.ModuleType("segaccel_restricted_pickle")
_pickle_module.Unpickler = RestrictedUnpickler
_pickle_module.load = lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load()
_pickle_module.__dict__["UnpicklingError"] = pickle.UnpicklingError


def restricted_load(path_or_file: str | os.PathLike | IO[bytes], map_location: Any = "cpu") -> Any:
    """Read a `torch.save` file (zip or legacy format) or a plain pickle without executing anything.

    Returns the unpickled object: tensors, containers and plain values as they were saved, plain numpy
    arrays and scalars as numpy values, and a `PickledObject` placeholder for every other object (see
    the module docstring). Tensors are loaded onto `map_location` (default the CPU).
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "rb") as f:
            return restricted_load(f, map_location=map_location)
    file = path_or_file
    start = file.tell()
    if zipfile.is_zipfile(file):
        file.seek(start)
        obj = _torch_load(file, map_location)
    else:
        file.seek(start)
        first = RestrictedUnpickler(file, encoding="utf-8").load()
        if _is_torch_legacy_magic(first):  # torch's pre-1.6 format: a magic number, then the pickles
            file.seek(start)
            obj = _torch_load(file, map_location)
        else:
            obj = first
    return _finalize(obj, {})


def _torch_load(file: IO[bytes], map_location: Any) -> Any:
    return torch.load(file, map_location=map_location, weights_only=False, pickle_module=_pickle_module)


def _is_torch_legacy_magic(obj: Any) -> bool:
    return isinstance(obj, int) and obj == torch.serialization.MAGIC_NUMBER
