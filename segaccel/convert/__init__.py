"""Pure state-dict and config conversions between segaccel and other libraries' checkpoints.

`segformer`: transformers' SegFormer (both directions); `mmseg`: MMSegmentation model-zoo
checkpoints. Nothing here builds a model or touches the network; `files.read_state_dict` reads a
weights file without unpickling anything but tensors, and `safe_pickle.restricted_load` reads any
torch pickle without running anything from it (other objects become inert `PickledObject`s).
"""

from .files import read_state_dict
from .mmseg import convert_mmseg_state_dict, load_mmseg_checkpoint
from .mmseg_config import convert_mmseg_config
from .mmseg_zoo import zoo_config
from .pyconfig import read_mmseg_config
from .safe_pickle import PickledObject, is_placeholder, placeholder_names, restricted_load
from .segformer import (
    is_transformers_segformer,
    mit_config_from_transformers,
    mit_state_dict_from_transformers,
    segformer_config_from_transformers,
    segformer_config_to_transformers,
    segformer_state_dict_from_transformers,
    segformer_state_dict_to_transformers,
)

__all__ = [
    "PickledObject",
    "is_placeholder",
    "placeholder_names",
    "restricted_load",
    "convert_mmseg_config",
    "convert_mmseg_state_dict",
    "is_transformers_segformer",
    "load_mmseg_checkpoint",
    "mit_config_from_transformers",
    "mit_state_dict_from_transformers",
    "read_mmseg_config",
    "read_state_dict",
    "segformer_config_from_transformers",
    "segformer_config_to_transformers",
    "segformer_state_dict_from_transformers",
    "segformer_state_dict_to_transformers",
    "zoo_config",
]
