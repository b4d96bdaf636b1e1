"""Batching: lists of images and samples, never padded (padding is the preprocessor's job)."""

from __future__ import annotations

from typing import Any


def seg_collate(batch: list[dict[str, Any]]) -> dict[str, list]:
    """Lists of PackSegInputs' outputs: `{"inputs": [Tensor (C, H, W)], "data_samples": [SegDataSample]}`."""
    for i, item in enumerate(batch):
        if not isinstance(item, dict) or "inputs" not in item or "data_samples" not in item:
            got = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise ValueError(
                f"seg_collate: batch item {i} must be PackSegInputs' dict with 'inputs' and 'data_samples', "
                f"got {got}"
            )
    return {
        "inputs": [item["inputs"] for item in batch],
        "data_samples": [item["data_samples"] for item in batch],
    }
