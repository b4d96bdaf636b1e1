"""Where `PackSegInputs` used to live; kept so that `segaccel.data.formatting` imports keep working.

The code is in `segaccel.data.transforms.formatting`.
"""

from segaccel.data.transforms.formatting import DEFAULT_META_KEYS, PackSegInputs

__all__ = ["DEFAULT_META_KEYS", "PackSegInputs"]
