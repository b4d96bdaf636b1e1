"""The config's `compile:` option (`engine.compile`): what each value asks of `torch.compile`, and a
model compiled in place keeps its state-dict names and its outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segaccel.engine.compile import compile_model, compile_options
from segaccel.registry import ConfigError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (False, None),
        (True, {"mode": None}),
        ("max-autotune", {"mode": "max-autotune"}),
        ({"mode": "reduce-overhead", "dynamic": True}, {"mode": "reduce-overhead", "dynamic": True}),
        ({"backend": "eager"}, {"backend": "eager"}),
        ({"mode": "default", "options": {"trace.enabled": False}}, {"options": {"trace.enabled": False}}),
    ],
)
def test_compile_values_map_to_torch_compile_arguments(value, expected):
    assert compile_options(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [(3, "expected true/false"), ({"mode": "fast"}, "is not one of"), ({"backnd": "eager"}, "unknown keys")],
)
def test_bad_compile_values_are_refused_by_name(value, message):
    with pytest.raises(ConfigError, match=message):
        compile_options(value)


def test_a_compiled_model_keeps_its_names_and_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    names = list(model.state_dict())
    x = torch.randn(2, 3, 7, 9)
    expected = model(x)
    assert compile_model(model, {"backend": "eager"}) is model
    assert list(model.state_dict()) == names
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)
    assert model._compiled_call_impl is not None  # nn.Module.compile: compiled in place
