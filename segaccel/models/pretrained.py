"""Saving a `Segmentor` to a folder or the Hub and loading it back: `save_pretrained`,
`push_to_hub`, `from_pretrained` (Hugging Face's `PyTorchModelHubMixin` with our `config.json`, our
model card and the weights door of `weights.py`).

`Segmentor` inherits these from `PretrainedMixin`; the model describes itself with its `config`
property, and `from_pretrained` builds it with `cls(**arguments)`.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any, TypeVar

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin, constants

from segaccel.file_modes import follow_umask
from segaccel.registry import ConfigError

from .config_json import check_config_json, from_pretrained_kwargs, read_config_json, without_pretrained
from .weights import (
    check_shapes_before_build,
    load_checked_state_dict,
    model_config,
    read_checkpoint,
    torch_dtype,
    weights_source,
)

T = TypeVar("T", bound="PretrainedMixin")
logger = logging.getLogger(__name__)


class PretrainedMixin(PyTorchModelHubMixin):
    """`save_pretrained` / `push_to_hub` / `from_pretrained` of a model described by its `config` property."""

    def config_for_saving(self) -> dict[str, Any]:
        """`config`, pointing at no pretrained weights (backbone `pretrained` and every `init_cfg` None)."""
        return without_pretrained(self.config)

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write `model.safetensors` and `config.json` (the full model description)."""
        from safetensors.torch import save_model

        save_directory = Path(save_directory)
        save_model(self, str(save_directory / constants.SAFETENSORS_SINGLE_FILE))
        follow_umask(save_directory / constants.SAFETENSORS_SINGLE_FILE)  # safetensors writes 0600
        text = json.dumps(self.config_for_saving(), sort_keys=True, indent=2)
        (save_directory / constants.CONFIG_NAME).write_text(text + "\n", encoding="utf-8")

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        config: dict | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write `config.json`, `model.safetensors` and a `README.md` model card into `save_directory`.

        The card (`segaccel.model_card.build_model_card`) takes `model_card_kwargs` (`metrics`,
        `train_config`, `train_command`, `repo_id`, ...); metrics and training config not given are
        read from `metrics.json` / `config.yaml` already in the folder (a runner export). A card
        segaccel wrote before is replaced; one written by hand is kept.
        """
        save_directory = Path(save_directory)
        from segaccel.model_card import is_generated_card

        readme = save_directory / constants.REPOCARD_NAME
        if readme.is_file() and is_generated_card(readme.read_text(encoding="utf-8")):
            readme.unlink()
        card_kwargs = {"model_dir": save_directory, **(model_card_kwargs or {})}
        if repo_id is not None:
            card_kwargs.setdefault("repo_id", repo_id)
        return super().save_pretrained(
            save_directory,
            config=config,
            repo_id=repo_id,
            push_to_hub=push_to_hub,
            model_card_kwargs=card_kwargs,
            **push_to_hub_kwargs,
        )

    def push_to_hub(
        self, repo_id: str, *, model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> str:
        """`PyTorchModelHubMixin.push_to_hub` (one commit: config.json, model.safetensors, README.md),
        with `repo_id` in the model card's usage snippet. For a saved folder with its metrics and
        training config, `segaccel.hub.push_model_dir` (`scripts/push_to_hub.py`) pushes those too."""
        card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=card_kwargs, **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The model card of this model (called by `save_pretrained` and `push_to_hub`).

        The card is built from data only (the saved config, metrics, training config) by
        `segaccel.model_card`, which imports nothing of `segaccel.models`.
        """
        from segaccel.model_card import build_model_card

        return build_model_card(self.config_for_saving(), **kwargs)

    @classmethod
    def from_pretrained(
        cls: type[T], pretrained_model_name_or_path: str | Path, *args: Any, **kwargs: Any
    ) -> T:
        """`PyTorchModelHubMixin.from_pretrained` (see `_from_pretrained`), from any source the weights door
        (`segaccel.models.weights`) reads: a model folder, a Hub id (`org/name`; `org/name@revision`
        pins a revision), or a weights file (`.safetensors`, `.bin`, `.pth`, `.pt`), the model then being
        described by the `config.json` beside the file (or by keyword arguments such as `backbone=`).

        `config.json` is read and checked first, so that a malformed one (not JSON, not an object, a part
        that is not an object, a layout version newer than this segaccel reads, ...) gives a ConfigError
        naming the file and what was expected, before anything is built.
        """
        source = weights_source(pretrained_model_name_or_path, kwargs.pop("revision", None))
        if source.kind == "hub":
            kwargs["revision"] = source.revision
        elif source.kind == "file":
            kwargs["weights_file"] = source.location
        model_id = source.model_location
        try:
            found, config = read_config_json(model_id, kwargs)
            if found:
                check_config_json(config, f"{model_id}/{constants.CONFIG_NAME}", given=kwargs)
            return super().from_pretrained(model_id, *args, **kwargs)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{pretrained_model_name_or_path}: {constants.CONFIG_NAME} (or another JSON file of the "
                f"model) is not valid JSON: {exc}"
            ) from exc

    @classmethod
    def _from_pretrained(
        cls: type[T],
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str | torch.device = "cpu",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        strict: bool = True,
        num_classes: int | None = None,
        config: dict | None = None,
        weights_file: str | None = None,
        **model_kwargs: Any,
    ) -> T:
        """Build the model from `config.json` and load its weights, strictly by default.

        `model_id` is a local folder or a Hub repo id (downloaded with `revision`, `cache_dir`,
        `token`, `local_files_only`, `force_download`, or read from the Hugging Face cache when
        offline); `weights_file` replaces its weights by a file's (set by `from_pretrained` when given
        a file). A foreign repo (a `model_type` of `checkpoint_formats.CHECKPOINT_FORMATS` in its
        config.json, e.g. a transformers SegFormer) is converted on load, and so are foreign weights.
        `device` (or `map_location`) and `dtype` place the loaded model.

        `strict=True` raises on any missing, unexpected or mis-shaped weight, naming them. Passing
        `num_classes=` (or an `id2label=` of another length) builds heads for that many classes and
        re-initialises the classifier weights whose shape no longer fits, saying so in the log.
        Other keyword arguments override config.json entries (e.g. `test_cfg=`).
        """
        hub_kwargs = dict(
            cache_dir=cache_dir, force_download=force_download, token=token, local_files_only=local_files_only
        )
        source = weights_source(model_id, revision)
        model_kwargs, our_config = model_config(source, config, model_kwargs, **hub_kwargs)
        kwargs, reinit_heads = from_pretrained_kwargs(
            model_kwargs,
            our_config,
            num_classes,
            accepted=inspect.signature(cls.__init__).parameters,
            where=f"{model_id}/{constants.CONFIG_NAME}",
        )
        where = f"{model_id}/{constants.CONFIG_NAME}"
        try:
            # Built first on the meta device (shapes, no memory): the weights' shapes are compared with
            # what config.json asks for before anything is allocated for it.
            shell = _meta_state_dict(cls, kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        weights = weights_source(weights_file) if weights_file is not None else source
        checkpoint = read_checkpoint(weights, config=config, **hub_kwargs)
        if shell is not None:
            check_shapes_before_build(shell, checkpoint.state_dict, reinit_heads, checkpoint.file)
        try:
            model = cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        model.load_weights(
            checkpoint.state_dict, strict=strict, reinit_heads=reinit_heads, source=checkpoint.file
        )
        model.to(device=device if device is not None else map_location, dtype=torch_dtype(dtype))
        model.eval()
        return model

    def load_weights(
        self,
        state_dict: dict[str, torch.Tensor],
        strict: bool = True,
        reinit_heads: bool = False,
        source: str = "state_dict",
    ) -> None:
        """Load a state dict, reporting every missing, unexpected and mis-shaped key by name
        (`weights.load_checked_state_dict`).

        `reinit_heads=True` skips head weights whose shape differs (a new class count) and logs them.
        With `strict=False`, missing and unexpected keys are logged instead of raising.
        """
        load_checked_state_dict(self, state_dict, strict=strict, reinit_heads=reinit_heads, source=source)


def _meta_state_dict(cls: type, kwargs: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The state dict of `cls(**kwargs)` built on the meta device (shapes only), or None when a part
    cannot be built there (then the shapes are compared after the real build). ConfigErrors propagate."""
    try:
        with torch.device("meta"):
            return cls(**kwargs).state_dict()
    except ConfigError:
        raise
    except Exception as exc:  # a part that computes values while it is built (.item(), numpy)
        logger.debug("could not build the model on the meta device first (%s: %s)", type(exc).__name__, exc)
        return None
