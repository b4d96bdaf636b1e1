"""Per-sample transforms with MMSegmentation 1.x semantics and argument names.

A transform is a callable `t(results, rng=None) -> results` on one sample held in a dict (see
`loading.init_results`). Random transforms draw only from `rng`, a generator the dataset seeds
per sample from (seed, epoch, index), so augmentation does not depend on workers or processes.

- `geometric`: Resize, RandomResize, RandomChoiceResize, ResizeShortestEdge, RandomCrop,
  RandomFlip, RandomRotate, Pad;
- `photometric`: PhotoMetricDistortion, RGB2Gray, RandomCutOut;
- `loading`: the starting results dict (`init_results`) and LoadAnnotations;
- `formatting`: PackSegInputs, the last step;
- `compose`: Compose;
- `functional`: the array kernels they use, on OpenCV as mmcv calls it (resize, crop, flip,
  rotate, colour look-ups and HSV conversions).

Registration with `TRANSFORMS` happens in `segaccel/data/__init__.py`.
"""

from segaccel.data.transforms.compose import Compose
from segaccel.data.transforms.formatting import PackSegInputs
from segaccel.data.transforms.functional import (
    FLIP_DIRECTIONS,
    INTERPOLATIONS,
    adjust_hsv,
    apply_lut,
    convert,
    flip_array,
    hsv_to_rgb,
    hue_lut,
    label_counts,
    linear_lut,
    rescale_size,
    resize_image,
    resize_mask,
    rgb_to_hsv,
    rotate_arrays,
    rotation_matrix,
    saturation_lut,
    scale_size,
)
from segaccel.data.transforms.geometric import (
    PADDING_MODES,
    Pad,
    RandomChoiceResize,
    RandomCrop,
    RandomFlip,
    RandomResize,
    RandomRotate,
    Resize,
    ResizeShortestEdge,
)
from segaccel.data.transforms.loading import (
    BATCH_AUGMENTS_KEY,
    PENDING_GT_KEY,
    LoadAnnotations,
    Results,
    init_results,
)
from segaccel.data.transforms.photometric import PhotoMetricDistortion, RandomCutOut, RGB2Gray

__all__ = [
    "BATCH_AUGMENTS_KEY",
    "FLIP_DIRECTIONS",
    "INTERPOLATIONS",
    "PADDING_MODES",
    "PENDING_GT_KEY",
    "Compose",
    "LoadAnnotations",
    "PackSegInputs",
    "Pad",
    "PhotoMetricDistortion",
    "RGB2Gray",
    "RandomChoiceResize",
    "RandomCrop",
    "RandomCutOut",
    "RandomFlip",
    "RandomResize",
    "RandomRotate",
    "Resize",
    "ResizeShortestEdge",
    "Results",
    "adjust_hsv",
    "apply_lut",
    "convert",
    "flip_array",
    "hsv_to_rgb",
    "hue_lut",
    "init_results",
    "label_counts",
    "linear_lut",
    "rescale_size",
    "resize_image",
    "resize_mask",
    "rgb_to_hsv",
    "rotate_arrays",
    "rotation_matrix",
    "saturation_lut",
    "scale_size",
]
