"""Fixtures shared by the model tests."""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint


@pytest.fixture
def checkpoint_calls(monkeypatch) -> list[int]:
    """Counts `torch.utils.checkpoint.checkpoint` calls (the backbones call it as `cp.checkpoint`)."""
    calls: list[int] = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    return calls
