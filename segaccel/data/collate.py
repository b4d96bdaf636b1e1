"""Batching: lists of images and samples, never padded (padding is the preprocessor's job).

With `skip_bad_samples` a dataset reports the bad rows it skipped through its items: a sample that
stands in for skipped rows (training) carries their number under `SKIPPED_KEY`, and in evaluation a
bad row becomes a marker, `{SKIPPED_KEY: n}` with no inputs (`skip_marker`), that `seg_collate`
drops. The batch then carries the skipped total under `SKIPPED_KEY` and the positions of dropped
items under `DROPPED_KEY` (each key only when there is something to report), so the loops can count
bad samples across DataLoader workers and processes.
"""

from __future__ import annotations

from typing import Any

SKIPPED_KEY = "num_skipped"
DROPPED_KEY = "dropped"


def skip_marker(count: int = 1) -> dict[str, int]:
    """The item a dataset returns in place of `count` bad rows that must not be replaced (evaluation)."""
    return {SKIPPED_KEY: int(count)}


def is_skip_marker(item: Any) -> bool:
    """Is `item` a `skip_marker` (a count of skipped rows, no sample)?"""
    return isinstance(item, dict) and "inputs" not in item and SKIPPED_KEY in item


def seg_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Lists of PackSegInputs' outputs: `{"inputs": [Tensor (C, H, W)], "data_samples": [SegDataSample]}`.

    Skip markers are dropped; their positions in `batch` go to `DROPPED_KEY`. The bad rows skipped
    (markers' and stand-ins' `SKIPPED_KEY` counts) are summed into `SKIPPED_KEY`. Both keys are absent
    when there is nothing to report.
    """
    inputs, data_samples, dropped = [], [], []
    skipped = 0
    for i, item in enumerate(batch):
        if is_skip_marker(item):
            skipped += int(item[SKIPPED_KEY])
            dropped.append(i)
            continue
        if not isinstance(item, dict) or "inputs" not in item or "data_samples" not in item:
            got = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise ValueError(
                f"seg_collate: batch item {i} must be PackSegInputs' dict with 'inputs' and 'data_samples', "
                f"got {got}"
            )
        inputs.append(item["inputs"])
        data_samples.append(item["data_samples"])
        skipped += int(item.get(SKIPPED_KEY, 0))
    out: dict[str, Any] = {"inputs": inputs, "data_samples": data_samples}
    if skipped:
        out[SKIPPED_KEY] = skipped
    if dropped:
        out[DROPPED_KEY] = dropped
    return out
