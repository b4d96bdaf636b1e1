"""Fixtures for the Hub tests: a local fake Hub (the offline cache fixture, `offline_cache`, is in
tests/conftest.py).

`huggingface_hub` reads HF_ENDPOINT when it is imported, so tests of the real client against the fake
Hub run it in subprocesses started with the environment set.
"""

from __future__ import annotations

import pytest
from fake_hub import FakeHub


@pytest.fixture
def fake_hub():
    with FakeHub() as hub:
        yield hub
