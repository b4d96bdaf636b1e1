"""Fixtures for the Hub tests: a hand-built Hugging Face cache (offline) and a local fake Hub.

`huggingface_hub` reads HF_HUB_OFFLINE / HF_HUB_CACHE / HF_ENDPOINT when it is imported, so the
offline fixture patches `huggingface_hub.constants` as well as the environment; tests of the real
client against the fake Hub run it in subprocesses started with the environment set.
"""

from __future__ import annotations

import pytest
from fake_hub import FakeHub
from huggingface_hub import constants


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache folder, with HF_HUB_OFFLINE=1 (environment and constants)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def fake_hub():
    with FakeHub() as hub:
        yield hub
