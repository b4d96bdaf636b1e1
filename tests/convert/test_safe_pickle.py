"""The restricted reader: tensors and plain data come back, nothing in the file ever runs."""

from __future__ import annotations

import collections
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from segaccel.convert import (
    PickledObject,
    is_placeholder,
    load_mmseg_checkpoint,
    placeholder_names,
    read_state_dict,
    restricted_load,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mmseg"


class _RunsShell:
    """`os.system` in `__reduce__`: unpickling it for real would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _WritesOnSetstate:
    """A class whose `__setstate__` writes a file: rebuilding it for real would write the marker."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state):
        Path(state["marker"]).write_text("ran")


class _Evaluates:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_a_malicious_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    weights = {"conv.weight": torch.randn(2, 3, 1, 1)}
    payloads = {
        "shell": _RunsShell(marker),
        "state": _WritesOnSetstate(str(marker)),
        "eval": _Evaluates(marker),
    }
    for saver in ("torch", "torch-legacy", "pickle"):
        path = tmp_path / f"{saver}.pth"
        ckpt = {"state_dict": weights, "meta": {"hooks": payloads}}
        if saver == "pickle":
            path.write_bytes(pickle.dumps({"meta": {"hooks": payloads}}))
        else:
            torch.save(ckpt, path, _use_new_zipfile_serialization=saver == "torch")
        loaded = restricted_load(path)
        assert not marker.exists(), saver
        hooks = loaded["meta"]["hooks"]
        assert all(is_placeholder(v) for v in hooks.values())
        assert hooks["shell"].name == f"{os.system.__module__}.system"  # posix.system on Linux
        assert hooks["shell"].args == (f"touch {marker}",)  # what it would have run, recorded only
        assert hooks["eval"].name == "builtins.eval"
        assert hooks["state"].state == {"marker": str(marker)}
        if saver != "pickle":
            assert torch.equal(loaded["state_dict"]["conv.weight"], weights["conv.weight"])
        # the readers built on it: the weights load, the payload is neither run nor taken for weights
        if saver == "torch":
            expected = weights["conv.weight"]
            assert torch.equal(load_mmseg_checkpoint(path)["state_dict"]["conv.weight"], expected)
            assert torch.equal(read_state_dict(path)["conv.weight"], expected)
    bad = tmp_path / "flat.pth"
    torch.save({**weights, "extra": _RunsShell(marker)}, bad)
    with pytest.raises(ValueError, match=r"refused to unpickle it: 'extra' holds a pickled .*system object"):
        read_state_dict(bad)
    assert not marker.exists()


def test_placeholders_are_inert_and_record_what_the_pickle_said():
    data = pickle.dumps({"obj": collections.Counter(a=2), "cls": collections.Counter})
    loaded = restricted_load(io.BytesIO(data))
    assert isinstance(loaded["obj"], PickledObject) and loaded["obj"].name == "collections.Counter"
    assert loaded["obj"].args == ({"a": 2},)
    assert is_placeholder(loaded["cls"]) and not isinstance(loaded["cls"], PickledObject)  # the class itself
    assert placeholder_names(loaded) == {"collections.Counter"}
    called = loaded["obj"](1, 2)  # calling a placeholder only makes another one
    assert isinstance(called, PickledObject) and called.args == (1, 2)


def test_tensors_parameters_and_plain_values_round_trip(tmp_path):
    value = {
        "t": torch.arange(6, dtype=torch.float64).reshape(2, 3)[:, 1:],  # a non-contiguous view
        "p": torch.nn.Parameter(torch.ones(2)),
        "i8": torch.tensor([1, -2], dtype=torch.int8),
        "bf16": torch.tensor([1.5], dtype=torch.bfloat16),
        "size": torch.Size([3, 4]),
        "dtype": torch.float16,
        "od": collections.OrderedDict(a=1),
        "mixed": [1, 2.5, "s", b"b", None, True, (1, 2), {3}, frozenset({4}), complex(1, 2), slice(1, 5)],
    }
    torch.save(value, tmp_path / "v.pth")
    loaded = restricted_load(tmp_path / "v.pth")
    assert torch.equal(loaded["t"], value["t"]) and loaded["t"].stride() == value["t"].stride()
    assert isinstance(loaded["p"], torch.nn.Parameter) and torch.equal(loaded["p"], value["p"])
    assert loaded["i8"].dtype == torch.int8 and loaded["bf16"].dtype == torch.bfloat16
    assert loaded["size"] == torch.Size([3, 4]) and loaded["dtype"] is torch.float16
    assert type(loaded["od"]) is collections.OrderedDict and loaded["mixed"] == value["mixed"]
    assert placeholder_names(loaded) == set()


def test_numpy_values_are_rebuilt_from_their_bytes(tmp_path):
    value = {
        "f64": np.float64(3.25),
        "i32": np.arange(6, dtype=np.int32).reshape(2, 3),
        "big_endian": np.arange(3, dtype=">f4"),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "strings": np.array(["ab", "c"]),
        "objects": np.array([1, "x"], dtype=object),
        "rng": np.random.RandomState(0).get_state(),
    }
    torch.save(value, tmp_path / "np.pth")
    loaded = restricted_load(tmp_path / "np.pth")
    assert type(loaded["f64"]) is np.float64 and loaded["f64"] == 3.25
    for key in ("i32", "big_endian", "fortran", "strings"):
        assert loaded[key].dtype == value[key].dtype and np.array_equal(loaded[key], value[key]), key
    assert loaded["fortran"].flags.f_contiguous
    assert is_placeholder(loaded["objects"])  # object arrays stay placeholders
    state = np.random.RandomState()
    state.set_state(loaded["rng"])  # a numpy RNG state is usable as it comes back
    assert state.randint(1000) == np.random.RandomState(0).randint(1000)


def test_real_mmsegmentation_1x_checkpoint_with_message_hub():
    ckpt = restricted_load(FIXTURES / "segformer_mit-b0" / "checkpoint_1x.pth")
    assert set(ckpt) == {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers"}
    assert placeholder_names(ckpt) == {"mmengine.logging.history_buffer.HistoryBuffer", "builtins.getattr"}
    loss = ckpt["message_hub"]["log_scalars"]["train/loss"]
    assert loss.name == "mmengine.logging.history_buffer.HistoryBuffer"
    assert loss.state["_log_history"].dtype == np.float64 and loss.state["_count_history"].tolist() == [1]
    assert ckpt["meta"]["dataset_meta"]["classes"][:2] == ("wall", "building")
    reference = torch.load(FIXTURES / "segformer_mit-b0" / "checkpoint_0x.pth", weights_only=True)
    assert ckpt["state_dict"].keys() == reference["state_dict"].keys()
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in reference["state_dict"].items())
    with pytest.raises(pickle.UnpicklingError):  # what torch.load(weights_only=True) does with it
        torch.load(FIXTURES / "segformer_mit-b0" / "checkpoint_1x.pth", weights_only=True)


def test_persistent_ids_outside_torch_files_are_refused():
    class Persist(pickle.Pickler):
        def persistent_id(self, obj):
            return "x" if obj == "secret" else None

    buffer = io.BytesIO()
    Persist(buffer).dump({"a": "secret"})
    with pytest.raises(pickle.UnpicklingError):
        restricted_load(io.BytesIO(buffer.getvalue()))
