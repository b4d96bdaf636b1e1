"""Sharing models on the Hugging Face Hub: model cards and push helpers.

`model_card` builds cards from data only (the model's own `save_pretrained` uses it); `push` uses
the models (it loads a saved folder before pushing it).
"""

from .model_card import build_model_card, is_generated_card, write_model_card
from .push import push_model_dir, resolve_model_dir

__all__ = ["build_model_card", "is_generated_card", "push_model_dir", "resolve_model_dir", "write_model_card"]
