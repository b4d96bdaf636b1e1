#!/usr/bin/env python
"""Evaluate a model on a dataset split: per-class table, summary and `WORK_DIR/metrics.json`.

    python scripts/test.py work_dirs/quickstart/model                  # an exported model folder
    python scripts/test.py exported/quickstart                         # scripts/export.py's ONNX folder
    python scripts/test.py CONFIG --checkpoint work_dirs/x/checkpoints/iter_2000
    python scripts/test.py org/segformer-b0-ade --split validation     # a Hub model id
    python scripts/test.py MODEL --mode slide --crop-size 512 512 --stride 341 341
    python scripts/test.py MODEL --tta --tta-scales 0.5 0.75 1.0 1.25 1.5 1.75
    python scripts/test.py MODEL --out-dir preds --original-ids --show-dir vis --confusion-matrix
    accelerate launch --multi_gpu --num_processes 2 scripts/test.py MODEL --batch-size 8

A model folder or Hub repo carries the model (`config.json`, `model.safetensors`) and, in
`config.yaml`, the config it was trained with, which names its dataset; `--data-config` gives
another dataset (a YAML with `test_dataloader`/`val_dataloader`, e.g.
configs/_base_/datasets/ade20k.yaml). `key=value` overrides change anything else. Under
`accelerate launch` each process evaluates its own shard; the metric's sums are reduced once, and
masks/overlays are written by the process that predicted them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from segaccel.config import apply_overrides, load_config  # noqa: E402
from segaccel.deploy import ExportedSegmentor, is_exported_folder  # noqa: E402
from segaccel.engine.runner import Runner  # noqa: E402
from segaccel.models import Segmentor  # noqa: E402

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DEFAULT_TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # MMSegmentation's img_ratios


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Evaluate a segaccel model.", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "target", help="a YAML config, a model folder (config.json + model.safetensors) or a Hub model id"
    )
    parser.add_argument(
        "--checkpoint", help="weights for a config: a checkpoint or model folder, or a .safetensors file"
    )
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of a Hub model id")
    parser.add_argument("--work-dir", "--work_dir", dest="work_dir", help="where metrics.json goes")
    parser.add_argument("--data-config", help="a YAML giving the dataset (test_dataloader / val_dataloader)")
    parser.add_argument("--split", help="dataset split to evaluate (default: the config's test split)")
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
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return parser.parse_args(argv)


def resolve_target(args: argparse.Namespace) -> tuple[dict[str, Any], Segmentor | None, str]:
    """(config, model or None, default work dir) for a config file, a model folder or a Hub id."""
    target = Path(args.target)
    if target.is_file():
        return load_config(target), None, str(Path("work_dirs") / target.stem / "test")
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
    if args.data_config:
        return {}
    raise SystemExit(f"{where} has no config.yaml naming its dataset: pass --data-config or a config")


def build_config(args: argparse.Namespace, cfg: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The config with `--data-config`, the options and the overrides applied; and the loader key."""
    if args.data_config:
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
    if model is not None and args.checkpoint:
        raise SystemExit("--checkpoint goes with a config; a model folder or Hub id carries its own weights")
    if args.tta and isinstance(model, ExportedSegmentor):
        raise SystemExit("--tta works on PyTorch models (it rescales normalised inputs), not exported ones")
    cfg, loader_key = build_config(args, cfg)
    if model is None and cfg.get("model") is None:
        raise SystemExit(f"{args.target}: the config has no `model`")
    runner = Runner(cfg, work_dir=args.work_dir or default_work_dir, config_path=args.target)
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


if __name__ == "__main__":
    main()
