"""Limits checked on a model's description before anything is built (`segaccel.limits`).

A `config.json` from the Hub or a training config sizes the work a model does: its class count,
its test-time sizes (the test pipeline's `Resize`, the preprocessor's padding `size`) and its slide
windows. `check_model_limits` compares these with the limits before a single layer is allocated, so
a hostile or mistyped value is a `ConfigError` naming the key and the limit, not gigabytes allocated
or hours of windows. `check_slide_windows` does the same for the windows of an actual image, at
inference time, before the first window runs.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from segaccel.limits import check_image_size, get_limits
from segaccel.registry import ConfigError

_RESIZES = ("Resize", "RandomResize", "ResizeShortestEdge", "RandomChoiceResize")


def check_model_limits(
    decode_head: Any = None,
    auxiliary_head: Any = None,
    data_preprocessor: Any = None,
    test_cfg: Any = None,
    test_pipeline: Any = None,
    id2label: Any = None,
) -> None:
    """Raise ConfigError (naming `model.<key>` and the limit) when a value sizes work over a limit.

    Checks every head's `num_classes` (and `id2label`'s length) against `max_num_classes`, the
    preprocessor's `size` / `test_cfg.size` and every test-pipeline resize `scale` against
    `max_image_side` / `max_image_pixels`, and the slide windows of an image of the test pipeline's
    resize scale against `max_slide_windows`. Malformed values are left to the parts' own checks.
    """
    lim = get_limits()
    heads = [("model.decode_head", decode_head)]
    if isinstance(auxiliary_head, list):
        heads += [(f"model.auxiliary_head[{i}]", h) for i, h in enumerate(auxiliary_head)]
    elif auxiliary_head is not None:
        heads.append(("model.auxiliary_head", auxiliary_head))
    for key, head in heads:
        n = head.get("num_classes") if isinstance(head, dict) else None
        if _is_int(n) and n > lim.max_num_classes:
            raise ConfigError(
                f"{key}.num_classes: {n} is over the limit of {lim.max_num_classes} classes; "
                + lim.how_to_raise("max_num_classes")
            )
    if isinstance(id2label, dict) and len(id2label) > lim.max_num_classes:
        raise ConfigError(
            f"model.id2label: {len(id2label)} classes, over the limit of {lim.max_num_classes}; "
            + lim.how_to_raise("max_num_classes")
        )
    if isinstance(data_preprocessor, dict):
        _check_hw(data_preprocessor.get("size"), "model.data_preprocessor.size")
        pre_test = data_preprocessor.get("test_cfg")
        if isinstance(pre_test, dict):
            _check_hw(pre_test.get("size"), "model.data_preprocessor.test_cfg.size")
    test_hw = None
    for i, step in enumerate(test_pipeline if isinstance(test_pipeline, list) else []):
        if isinstance(step, dict) and step.get("type") in _RESIZES:
            hw = _check_scale(step, f"model.test_pipeline.{i}")
            test_hw = hw or test_hw
    if isinstance(test_cfg, dict) and test_cfg.get("mode") == "slide":
        crop, stride = _pair(test_cfg.get("crop_size")), _pair(test_cfg.get("stride"))
        if crop is not None:
            check_image_size(*crop, "model.test_cfg.crop_size", error=ConfigError)
        if crop is not None and stride is not None and test_hw is not None:
            # the test pipeline resizes every image to fit test_hw (either way round with keep_ratio)
            worst = max(
                slide_window_count(test_hw, crop, stride), slide_window_count(test_hw[::-1], crop, stride)
            )
            if worst > lim.max_slide_windows:
                raise ConfigError(
                    f"model.test_cfg: crop_size {list(crop)} with stride {list(stride)} makes {worst} slide "
                    f"windows on an image of the test pipeline's size {list(test_hw)} (h, w), over the limit "
                    f"of {lim.max_slide_windows} per image; " + lim.how_to_raise("max_slide_windows")
                )


def slide_window_count(img_hw: Sequence[int], crop_size: Sequence[int], stride: Sequence[int]) -> int:
    """How many windows `slide_windows` makes on an `img_hw` image (without listing them)."""
    (h, w), (ch, cw), (sh, sw) = img_hw, crop_size, stride
    return (max(h - ch + sh - 1, 0) // sh + 1) * (max(w - cw + sw - 1, 0) // sw + 1)


def check_slide_windows(img_hw: Sequence[int], crop_size: Sequence[int], stride: Sequence[int]) -> None:
    """ConfigError naming `model.test_cfg` when an `img_hw` image needs more slide windows than allowed."""
    count = slide_window_count(img_hw, crop_size, stride)
    lim = get_limits()
    if count > lim.max_slide_windows:
        raise ConfigError(
            f"model.test_cfg: crop_size {list(crop_size)} with stride {list(stride)} makes {count} slide "
            f"windows on this {img_hw[0]}x{img_hw[1]} (h x w) input, over the limit of "
            f"{lim.max_slide_windows} per image; use a larger crop_size/stride, or "
            + lim.how_to_raise("max_slide_windows")
        )


def _check_scale(step: dict, key: str) -> tuple[int, int] | None:
    """Check a resize step's `scale` (w, h) (times `ratio_range`'s upper end); its (h, w) bound."""
    scale = step.get("scale")
    scales = scale if isinstance(scale, list) and scale and isinstance(scale[0], list) else [scale]
    ratio = step.get("ratio_range")
    factor = max(ratio) if isinstance(ratio, list) and ratio and all(_is_number(r) for r in ratio) else 1
    bound = None
    for s in scales:
        wh = _pair(s)
        if wh is None:
            continue
        w, h = int(wh[0] * factor), int(wh[1] * factor)
        what = f"{key}.scale (w, h) = {list(wh)}" + (f" x {factor}" if factor != 1 else "")
        check_image_size(h, w, what, error=ConfigError)
        bound = (h, w) if bound is None or h * w > bound[0] * bound[1] else bound
    return bound


def _check_hw(value: Any, key: str) -> None:
    hw = _pair(value)
    if hw is not None:
        check_image_size(*hw, key, error=ConfigError)


def _pair(value: Any) -> tuple[int, int] | None:
    """`value` as a pair of positive ints (an int repeated), or None when it is not one."""
    if _is_int(value):
        value = [value, value]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
