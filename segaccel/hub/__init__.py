"""Sharing models on the Hugging Face Hub: model cards and push helpers.

Cards are built by the ground-floor `segaccel.model_card` (from data only, so the model's own
`save_pretrained` can use it) and re-exported here; `push` uses the models (it loads a saved folder
before pushing it).
"""

from segaccel.hub.push import push_model_dir, resolve_model_dir
from segaccel.model_card import build_model_card, is_generated_card, write_model_card

__all__ = ["build_model_card", "is_generated_card", "push_model_dir", "resolve_model_dir", "write_model_card"]
