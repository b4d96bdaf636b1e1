"""Where the dataset code used to live; kept so that `segaccel.data.datasets` imports keep working.

The code is in: `sources` (loading a config's source, splits), `classes` (id2label, palettes),
`rows` (the row reader: decoding, label mapping, `SampleError`), `seg_dataset` (`SegDataset`) and
`builder` (`build_dataset`, `dataset_from_config`). New code imports from there or from
`segaccel.data`.
"""

from segaccel.data.builder import LOADER_KEYS, build_dataset, dataset_from_config
from segaccel.data.classes import check_palette, dataset_id2label
from segaccel.data.decode import LABEL_MODES, RGB_CONVERTIBLE_MODES
from segaccel.data.rows import (
    IMAGE_COLUMNS,
    LABEL_COLUMNS,
    SampleError,
    SampleReader,
    map_labels,
    resolve_columns,
)
from segaccel.data.seg_dataset import SegDataset
from segaccel.data.sources import (
    DEFAULT_VALIDATION_SPLIT,
    OWN_KEYS,
    SYNTHETIC_PATH,
    VALIDATION_SPLITS,
    build_hf_dataset,
)

__all__ = [
    "DEFAULT_VALIDATION_SPLIT",
    "IMAGE_COLUMNS",
    "LABEL_COLUMNS",
    "LABEL_MODES",
    "LOADER_KEYS",
    "OWN_KEYS",
    "RGB_CONVERTIBLE_MODES",
    "SYNTHETIC_PATH",
    "VALIDATION_SPLITS",
    "SampleError",
    "SampleReader",
    "SegDataset",
    "build_dataset",
    "build_hf_dataset",
    "check_palette",
    "dataset_from_config",
    "dataset_id2label",
    "map_labels",
    "resolve_columns",
]
