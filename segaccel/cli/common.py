"""What every command shares: `key=value` overrides anywhere on the line, split names as `datasets`
writes them, shipped configs found by name, and the command line to print back to the user."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from segaccel.config import apply_overrides, load_config

# `train_cfg.max_iters=200`, `model.decode_head.num_classes=3`, `dataset.path=DIR`
OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")
SPLIT_ALIASES = {"val": "validation", "valid": "validation"}
LOADER_OF_SPLIT = {"train": "train_dataloader", "validation": "val_dataloader", "test": "test_dataloader"}
CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # the shipped configs (a link in a clone)


def is_override(text: str) -> bool:
    """Does a command-line word look like a dotted `key=value` override?"""
    return bool(OVERRIDE.match(text))


def add_overrides_argument(parser: argparse.ArgumentParser) -> None:
    """The `key=value ...` positional every command that reads a config takes, anywhere on the line."""
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted config overrides anywhere on the line, e.g. train_cfg.max_iters=200",
    )


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse with options, positionals and `key=value` overrides in any order.

    Every `key=value` word is an override, wherever it stands (so `--resume train_cfg.max_iters=60`
    is a bare `--resume` and an override); another word left over is an error naming it.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    overrides = [w for w in words if is_override(w)]
    args = parser.parse_intermixed_args([w for w in words if not is_override(w)])
    for word in getattr(args, "overrides", None) or []:
        parser.error(f"{word!r} is neither an option nor a key=value override (e.g. train_cfg.max_iters=200)")
    args.overrides = overrides
    return args


def split_name(name: str) -> str:
    """A split name as `datasets` writes it: `val`/`valid` → `validation`."""
    return SPLIT_ALIASES.get(name, name)


def split_argument(parser: argparse.ArgumentParser, default: str = "train", help_text: str = "") -> None:
    """`--split train|validation|test` (`val` accepted): which loader of the config to read."""
    parser.add_argument(
        "--split",
        default=default,
        type=split_name,
        choices=list(LOADER_OF_SPLIT),
        help=help_text or "which loader's dataset: train, validation (or val) or test",
    )


def find_config(path: str | os.PathLike) -> Path:
    """A config file: the path as given, else the shipped config of that name.

    `configs/quickstart.yaml`, `quickstart.yaml`, `quickstart` and `segformer/segformer_mit-b0_...`
    all find the configs installed with the package, so an installed command needs no clone.
    """
    given = Path(path)
    if given.is_file():
        return given
    name = given.as_posix()
    name = name[len("configs/") :] if name.startswith("configs/") else name
    for candidate in (CONFIGS / name, CONFIGS / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise SystemExit(
        f"{path}: no such config file, nor a shipped config of that name (shipped: {CONFIGS}, e.g. "
        "configs/quickstart.yaml; `segaccel configs` lists them)"
    )


def list_configs() -> list[str]:
    """The shipped configs as `configs/<name>.yaml`, bases left out."""
    return sorted(
        f"configs/{p.relative_to(CONFIGS).as_posix()}"
        for p in CONFIGS.rglob("*.yaml")
        if "_base_" not in p.relative_to(CONFIGS).parts
    )


def load_run_config(
    config: str | os.PathLike, overrides: list[str], dataset: str | None = None, resize_model: bool = True
) -> dict[str, Any]:
    """The config file (`find_config`) with `--dataset` (or a `dataset:` block) applied to every
    loader, then the overrides. `dataset.*` overrides are options for that source."""
    from segaccel.data.dataset_spec import use_dataset

    path = find_config(config)
    own = [o for o in overrides if o.startswith("dataset.") or o.startswith("dataset=")]
    cfg = load_config(path, own)
    if dataset or cfg.get("dataset") is not None:
        cfg = use_dataset(cfg, dataset, resize_model=resize_model)
    return apply_overrides(cfg, [o for o in overrides if o not in own])


def early_logging() -> None:
    """Log to stderr before a Runner sets up its log file (what `--dataset` resolved, ...)."""
    from segaccel.engine.logging import setup_logging

    setup_logging(None, is_main=int(os.environ.get("RANK", "0")) == 0)
