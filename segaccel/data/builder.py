"""`build_dataset`: the torch dataset a config describes (a map-style `SegDataset` or a stream)."""

from __future__ import annotations

from typing import Any

import datasets

from segaccel.data.classes import check_palette, dataset_id2label
from segaccel.data.rows import resolve_columns
from segaccel.data.seg_dataset import SegDataset
from segaccel.data.sources import build_hf_dataset
from segaccel.data.streaming import SegStreamDataset, prepare_stream
from segaccel.data.transforms import Compose, PackSegInputs
from segaccel.registry import ConfigError


def build_dataset(
    dataset_cfg: dict[str, Any],
    split: str,
    seed: int = 0,
    num_classes: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    training: bool = False,
    key: str = "dataset",
) -> SegDataset | SegStreamDataset:
    """A torch dataset over `build_hf_dataset(dataset_cfg, split)` with the config's pipeline and options.

    `key` is where `dataset_cfg` sits in the whole config (e.g. `train_dataloader.dataset`): errors
    in the pipeline name `<key>.pipeline.<i>`.

    A map-style split gives a `SegDataset` (the sampler shards it across processes). A streamed
    split gives a `SegStreamDataset` sharded here, once, for process `rank` of `world_size`
    (`split_dataset_by_node`); with `training` it is shuffled with a buffer of
    `shuffle_buffer_size` (default 1000) examples and repeats epoch after epoch.

    With `skip_bad_samples: true`, a bad row is replaced by the next good one in training (batches
    keep their size) and dropped in evaluation (`training=False`: no sample is evaluated twice);
    either way the count reaches the loops through the batches (`SKIPPED_KEY`).
    """
    hf_dataset = build_hf_dataset(dataset_cfg, split)
    name = str(dataset_cfg["path"])
    split_name = str(dataset_cfg.get("split") or split)
    where = f"dataset {name!r} split {split_name!r}"
    image_column, label_column = resolve_columns(
        dataset_cfg, getattr(hf_dataset, "column_names", None), where
    )
    id2label = dataset_id2label(dataset_cfg, hf_dataset)
    if dataset_cfg.get("palette") is not None:
        check_palette(dataset_cfg["palette"], num_classes or (len(id2label) if id2label else None))
    pipeline = Compose(dataset_cfg.get("pipeline") or [PackSegInputs()], key=f"{key}.pipeline")
    last = pipeline.transforms[-1] if pipeline.transforms else None
    if not isinstance(last, PackSegInputs):
        raise ConfigError(
            f"{key}.pipeline: must end with {{type: PackSegInputs}} (it packs `inputs` and `data_samples` "
            f"for the batch), but ends with {type(last).__name__}"
        )
    options = dict(
        pipeline=pipeline,
        image_column=image_column,
        label_column=label_column,
        reduce_zero_label=bool(dataset_cfg.get("reduce_zero_label", False)),
        label_map=dataset_cfg.get("label_map"),
        ignore_index=int(dataset_cfg.get("ignore_index", 255)),
        num_classes=num_classes,
        seed=seed,
        name=name,
        split=split_name,
        id2label=id2label,
        skip_bad_samples=bool(dataset_cfg.get("skip_bad_samples", False)),
    )
    if isinstance(hf_dataset, datasets.IterableDataset):
        stream = prepare_stream(
            hf_dataset,
            seed=seed,
            rank=rank,
            world_size=world_size,
            shuffle_buffer_size=int(dataset_cfg.get("shuffle_buffer_size", 1000)) if training else 0,
            columns=[c for c in (image_column, label_column) if c is not None],
        )
        return SegStreamDataset(stream, rank=rank, world_size=world_size, infinite=training, **options)
    return SegDataset(hf_dataset, fill_skipped=training, **options)


LOADER_KEYS = {"train": "train_dataloader", "val": "val_dataloader", "test": "test_dataloader"}


def dataset_from_config(
    cfg: dict[str, Any], which: str = "train", training: bool | None = None, seed: int | None = None
) -> SegDataset | SegStreamDataset:
    """The dataset of a whole config's `train`/`val`/`test` dataloader, as the runner builds it (one process).

    `num_classes` comes from `model.decode_head.num_classes`, else from the dataset's class names.
    `training` (default: `which == "train"`) makes a streamed split repeat and shuffle.
    """
    key = LOADER_KEYS.get(which, which)
    dataset_cfg = (cfg.get(key) or {}).get("dataset") if isinstance(cfg.get(key), dict) else None
    if not isinstance(dataset_cfg, dict):
        raise ConfigError(f"{key}.dataset: missing in the config")
    dataset_cfg = dict(dataset_cfg)
    split = dataset_cfg.pop("split", "train" if key.startswith("train") else "validation")
    num_classes = ((cfg.get("model") or {}).get("decode_head") or {}).get("num_classes")
    if num_classes is None:
        id2label = dataset_id2label(dataset_cfg)
        num_classes = len(id2label) if id2label else None
    dataset = build_dataset(
        dataset_cfg,
        split,
        seed=int(cfg.get("seed", 0) if seed is None else seed),
        num_classes=num_classes,
        training=key.startswith("train") if training is None else training,
        key=f"{key}.dataset",
    )
    if dataset.num_classes is None and dataset.id2label:  # names from the data (ClassLabel feature)
        dataset.num_classes = len(dataset.id2label)
    return dataset
