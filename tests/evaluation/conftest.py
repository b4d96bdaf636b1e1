"""Fixtures of the evaluation tests (the models are in evaluation_helpers.py)."""

import pytest
from evaluation_helpers import pointwise_segmentor

from segaccel.models import Segmentor


@pytest.fixture
def pointwise_model() -> Segmentor:
    return pointwise_segmentor()
