"""Evaluate a model on a dataset split: `segaccel test` (also `segaccel-test`, `scripts/test.py`).

    segaccel test work_dirs/quickstart/model                          # a model folder
    segaccel test work_dirs/quickstart/model --dataset DIR            # on another dataset (its test split,
                                                                      # else its validation split)
    segaccel test exported/quickstart                                 # scripts/export.py's ONNX folder
    segaccel test CONFIG --checkpoint work_dirs/x/checkpoints/iter_2000
    segaccel test org/segformer-b0-ade --split validation             # a Hub model id
    segaccel test MODEL --mode slide --crop-size 512 512 --stride 341 341
    segaccel test MODEL --tta --tta-scales 0.5 0.75 1.0 1.25 1.5 1.75
    segaccel test MODEL --out-dir preds --original-ids --show-dir vis --confusion-matrix
    segaccel test MODEL --work-dir D test_dataloader.batch_size=3     # key=value anywhere
    accelerate launch --multi_gpu --num_processes 2 -m segaccel.cli.test MODEL --batch-size 8

A model folder or Hub repo carries the model (`config.json`, `model.safetensors`) and, in
`config.yaml`, the config it was trained with, which names its dataset: that is what is evaluated
unless `--dataset PATH_OR_HUB_ID` (a source, read as `segaccel train --dataset` reads it) or
`--data-config` (a YAML with `test_dataloader`/`val_dataloader`, e.g.
configs/_base_/datasets/ade20k.yaml) names another; the dataset evaluated is always logged, and a
dataset other than the model's training data is said to be one. A dataset whose classes differ in
number from the model's is refused. `key=value` overrides change anything else. Under
`accelerate launch` each process evaluates its own shard; the metric's sums are reduced once, and
masks/overlays are written by the process that predicted them.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Any

from segaccel.cli.common import (
    add_overrides_argument,
    find_config,
    parse_command_line,
    split_name,
)
from segaccel.config import apply_overrides, load_config
from segaccel.data.dataset_spec import source_id2label, use_dataset
from segaccel.deploy import ExportedSegmentor, is_exported_folder
from segaccel.engine.logging import logger
from segaccel.engine.runner import Runner
from segaccel.models import Segmentor

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DEFAULT_TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # MMSegmentation's img_ratios


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Evaluate a segaccel model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "target",
        help="a model folder (config.json + model.safetensors), an exported folder, a Hub model id, or a "
        "YAML config (or a shipped config's name) with --checkpoint",
    )
    parser.add_argument(
        "--checkpoint",
        help="weights for a config, through the one weight door: a .safetensors or .bin file, an "
        "MMSegmentation .pth, a model or training-checkpoint folder, or a Hub model id (org/name[@revision])",
    )
    parser.add_argument(
        "--dataset",
        metavar="PATH_OR_HUB_ID",
        help="evaluate on this dataset (a folder, a save_to_disk folder or a Hub dataset id): its test "
        "split, else its validation split",
    )
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of a Hub model id")
    parser.add_argument("--work-dir", "--work_dir", dest="work_dir", help="where metrics.json goes")
    parser.add_argument("--data-config", help="a YAML giving the dataset (test_dataloader / val_dataloader)")
    parser.add_argument(
        "--split",
        type=split_name,
        help="dataset split to evaluate, as the dataset names it (val = validation; default: the config's "
        "test split)",
    )
    parser.add_argument("--batch-size", type=int, help="images per process per batch")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers per process")
    parser.add_argument("--mode", choices=("whole", "slide"), help="inference mode (default: the model's)")
    parser.add_argument("--crop-size", type=int, nargs=2, metavar=("H", "W"), help="slide window")
    parser.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), help="slide stride")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation: scales and flips")
    parser.add_argument(
        "--tta-scales", type=float, nargs="+", default=DEFAULT_TTA_SCALES, help="ratios of the test size"
    )
    parser.add_argument("--no-tta-flip", dest="tta_flip", action="store_false", help="TTA without flips")
    parser.add_argument("--metrics", nargs="+", choices=("mIoU", "mDice", "mFscore"), help="iou_metrics")
    parser.add_argument("--show-dir", help="write image | ground truth | prediction overlays here")
    parser.add_argument("--out-dir", help="write predicted masks here as PNG label ids")
    parser.add_argument(
        "--original-ids",
        action="store_true",
        help="--out-dir masks in the dataset's stored ids (+1 for reduce_zero_label, inverse label_map)",
    )
    parser.add_argument(
        "--confusion-matrix", action="store_true", help="write the row-normalised confusion matrix (PNG, CSV)"
    )
    add_overrides_argument(parser)
    return parse_command_line(parser, argv)


def resolve_target(args: argparse.Namespace) -> tuple[dict[str, Any], Segmentor | None, str]:
    """(config, model or None, default work dir) for a config file, a model folder or a Hub id."""
    target = Path(args.target)
    if target.is_file() or (target.suffix in (".yaml", ".yml") and not target.exists()):
        config = find_config(target)
        return load_config(config), None, str(Path("work_dirs") / config.stem / "test")
    if target.is_dir():
        if is_exported_folder(target):  # scripts/export.py's ONNX / ExportedProgram, no model code
            model = ExportedSegmentor(target)
        elif not (target / "config.json").is_file():
            raise SystemExit(f"{target} is not a model folder (no config.json)")
        else:
            model = Segmentor.from_pretrained(str(target))
        cfg = _model_config(target / "config.yaml", args, str(target))
        return cfg, model, str(target.parent / "test")
    if not HUB_ID.match(args.target):
        raise SystemExit(f"{args.target}: no such config file or model folder (nor a Hub id like org/name)")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    model = Segmentor.from_pretrained(args.target, revision=args.revision)
    try:
        config_file = Path(hf_hub_download(args.target, "config.yaml", revision=args.revision))
    except EntryNotFoundError:
        config_file = None
    cfg = _model_config(config_file, args, args.target)
    return cfg, model, str(Path("work_dirs") / args.target.replace("/", "--") / "test")


def _model_config(config_file: Path | None, args: argparse.Namespace, where: str) -> dict[str, Any]:
    if config_file is not None and config_file.is_file():
        return load_config(config_file)
    if args.data_config or args.dataset:
        return {}
    raise SystemExit(
        f"{where} has no config.yaml naming its dataset: pass --dataset, --data-config or a config"
    )


def build_config(
    args: argparse.Namespace, cfg: dict[str, Any], model: Any = None
) -> tuple[dict[str, Any], str]:
    """The config with `--dataset`/`--data-config`, the options and the overrides applied; and the
    loader key."""
    if args.dataset and args.data_config:
        raise SystemExit("--dataset and --data-config both name a dataset: give one")
    if args.dataset:
        cfg = use_dataset(_with_eval_loaders(cfg, model), args.dataset, resize_model=False)
    elif args.data_config:
        data_cfg = load_config(args.data_config)
        for key in ("test_dataloader", "val_dataloader", "test_evaluator", "val_evaluator"):
            if key in data_cfg:
                cfg[key] = data_cfg[key]
    loader_key = "test_dataloader" if cfg.get("test_dataloader") else "val_dataloader"
    evaluator_key = "test_evaluator" if loader_key == "test_dataloader" else "val_evaluator"
    options = []
    if args.split:
        options.append(f"{loader_key}.dataset.split={args.split}")
    if args.batch_size is not None:
        options.append(f"{loader_key}.batch_size={args.batch_size}")
    if args.num_workers is not None:
        options.append(f"{loader_key}.num_workers={args.num_workers}")
    if args.metrics:
        options.append(f"{evaluator_key}.iou_metrics=[{', '.join(args.metrics)}]")
    return apply_overrides(cfg, options + list(args.overrides)), loader_key


def _with_eval_loaders(cfg: dict[str, Any], model: Any) -> dict[str, Any]:
    """`cfg` with a test loader to point at a dataset when it has none (a Hub model without config.yaml)."""
    if any(isinstance(cfg.get(k), dict) for k in ("test_dataloader", "val_dataloader")):
        return cfg
    pipeline = copy.deepcopy(getattr(model, "test_pipeline", None) or [])
    if not pipeline or pipeline[-1].get("type") != "PackSegInputs":
        pipeline.append({"type": "PackSegInputs"})
    return {**cfg, "test_dataloader": {"batch_size": 1, "num_workers": 0, "dataset": {"pipeline": pipeline}}}


SOURCE_KEYS = ("path", "name", "data_files", "data_dir", "synthetic")


def _source(dataset_cfg: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (dataset_cfg or {}).items() if k in SOURCE_KEYS and v is not None}


def check_dataset(
    args: argparse.Namespace, cfg: dict[str, Any], loader_key: str, trained: dict[str, Any], model: Any
) -> None:
    """Say what is evaluated; say so when it is not the model's training data; refuse a dataset whose
    class count differs from the model's."""
    dataset_cfg = (cfg.get(loader_key) or {}).get("dataset") or {}
    evaluated = _source(dataset_cfg)
    train_source = _source((trained.get("train_dataloader") or {}).get("dataset"))
    named = (
        "named on the command line" if (args.dataset or args.data_config) else "from the model's config.yaml"
    )
    logger.info(f"evaluating on {evaluated or dataset_cfg}, split {dataset_cfg.get('split')!r} ({named})")
    if train_source and evaluated != train_source:
        hint = "" if (args.dataset or args.data_config) else "; pass --dataset to evaluate on another dataset"
        logger.warning(
            f"the model was trained on {train_source}, not on the dataset evaluated ({evaluated}){hint}"
        )
    model_names = getattr(model, "id2label", None) if model is not None else None
    if model is None or not model_names or not dataset_cfg.get("path"):
        return
    try:
        names = source_id2label(dataset_cfg)
    except Exception:  # classes not readable before loading: the label check of the rows still applies
        names = None
    if names is None:
        return
    if len(names) != len(model_names):
        raise SystemExit(
            f"the dataset {dataset_cfg['path']!r} has {len(names)} classes ({list(names.values())[:8]}), the "
            f"model {len(model_names)} ({list(model_names.values())[:8]}): it was not trained on this dataset"
        )
    if [names[i] for i in sorted(names)] != [model_names[i] for i in sorted(model_names)]:
        logger.warning(
            f"the dataset's class names {list(names.values())} differ from the model's "
            f"{list(model_names.values())}"
        )


def inference_cfg(args: argparse.Namespace, model_test_cfg: dict[str, Any] | None) -> dict[str, Any] | None:
    """The `test_cfg` the options ask for, or None to keep the model's."""
    if args.mode is None and args.crop_size is None and args.stride is None:
        return None
    mode = args.mode or (model_test_cfg or {}).get("mode", "whole")
    if mode == "whole":
        if args.crop_size or args.stride:
            raise SystemExit("--crop-size/--stride are options of --mode slide")
        return {"mode": "whole"}
    previous = model_test_cfg if (model_test_cfg or {}).get("mode") == "slide" else {}
    crop_size = args.crop_size or previous.get("crop_size")
    stride = args.stride or previous.get("stride")
    if not crop_size or not stride:
        raise SystemExit("--mode slide needs --crop-size H W and --stride H W (the model has none)")
    return {"mode": "slide", "crop_size": list(crop_size), "stride": list(stride)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg, model, default_work_dir = resolve_target(args)
    trained = copy.deepcopy(cfg)
    if model is not None and args.checkpoint:
        raise SystemExit("--checkpoint goes with a config; a model folder or Hub id carries its own weights")
    if args.tta and isinstance(model, ExportedSegmentor):
        raise SystemExit("--tta works on PyTorch models (it rescales normalised inputs), not exported ones")
    cfg, loader_key = build_config(args, cfg, model)
    if model is None and cfg.get("model") is None:
        raise SystemExit(f"{args.target}: the config has no `model`")
    runner = Runner(cfg, work_dir=args.work_dir or default_work_dir, config_path=args.target)
    check_dataset(args, cfg, loader_key, trained, model)
    current = model.test_cfg if model is not None else (cfg.get("model") or {}).get("test_cfg")
    metrics = runner.test(
        model=model,
        checkpoint=args.checkpoint,
        loader_key=loader_key,
        test_cfg=inference_cfg(args, current),
        tta={"scales": list(args.tta_scales), "flip": args.tta_flip} if args.tta else None,
        show_dir=args.show_dir,
        out_dir=args.out_dir,
        original_ids=args.original_ids,
        confusion_matrix=args.confusion_matrix,
    )
    if runner.accelerator.is_main_process:
        print(" ".join(f"{k}: {v:.2f}" for k, v in metrics.items()))
    return metrics


def run() -> int:
    """The installed command's entry point (`segaccel-test`)."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(run())
