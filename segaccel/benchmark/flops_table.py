"""The docs' parameter/FLOP tables, generated from `segaccel.benchmark.flops.count_config`.

Each table sits in a docs page between `<!-- flops-table: NAME -->` and `<!-- /flops-table -->`
and is rewritten whole by

    python scripts/flops_table.py            # rewrite the tables in docs/
    python scripts/flops_table.py --check    # exit 1, naming the rows, when a table differs

so a figure in the docs is what `scripts/get_flops.py CONFIG` prints (the same function, the same
input size: the crop size in the config's name). Figures published by others (a paper, a README)
are data here, quoted in their own columns beside ours. `tests/benchmark/test_flops_table.py`
recounts the cheapest rows and fails when the committed table drifts from the code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segaccel.benchmark.flops import count_config, load_model_config

END = "<!-- /flops-table -->"


@dataclass(frozen=True)
class Table:
    """One docs table: its page, its rows (config paths under `configs/`) and how a row reads."""

    page: str
    header: tuple[str, ...]
    align: tuple[str, ...]
    configs: tuple[str, ...]
    cells: Callable[[str, dict[str, Any], Path], list[str]]
    published: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _weights(config_path: Path) -> str:
    pretrained = load_model_config(str(config_path))["model"]["backbone"].get("pretrained")
    return f"`{pretrained}`" if isinstance(pretrained, str) else "none"


def _zoo_cells(config: str, row: dict[str, Any], root: Path) -> list[str]:
    h, w = row["input"].split("x")[2:]
    return [
        f"`{config}`",
        _weights(root / "configs" / config),
        f"{h}×{w}",
        f"{row['params_M']:.2f} M",
        f"{row['GFLOPs']:.2f}",
        f"{row['GMACs']:.2f}",
    ]


def _foundation_cells(config: str, row: dict[str, Any], root: Path) -> list[str]:
    h, w = row["input"].split("x")[2:]
    return [
        f"`{config}`",
        f"{h}×{w}",
        f"{row['params_M']:.2f} M ({row['trainable_params_M']:.2f} M)",
        f"{row['GFLOPs']:.2f}",
    ]


SEGFORMER = tuple(f"segformer/segformer_mit-b{i}_8xb2-160k_ade20k-512x512.yaml" for i in range(6))
TABLES: dict[str, Table] = {
    "zoo": Table(
        page="docs/models/index.md",
        header=("config", "backbone weights", "input", "params", "GFLOPs", "GMACs"),
        align=("---", "---", "---", "---:", "---:", "---:"),
        configs=(
            *SEGFORMER,
            "segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.yaml",
            "fcn/fcn_r50-d8_4xb2-80k_cityscapes-512x1024.yaml",
            "pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.yaml",
            "deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.yaml",
            "deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.yaml",
            "upernet/upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.yaml",
            "upernet/upernet_swin-t_8xb2-160k_ade20k-512x512.yaml",
            "mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.yaml",
            "mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.yaml",
            "mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.yaml",
            "mask2former/mask2former_swin-t_8xb2-90k_cityscapes-512x1024.yaml",
            "eomt/eomt_vit-s-dinov2_4xb4-39k_ade20k-512x512.yaml",
            "eomt/eomt_vit-b-dinov2_4xb4-39k_ade20k-512x512.yaml",
            "eomt/eomt_vit-l-dinov2_4xb4-39k_ade20k-512x512.yaml",
        ),
        cells=_zoo_cells,
    ),
    "foundation": Table(
        page="docs/models/foundation-backbones.md",
        header=("config", "input", "params (trainable)", "GFLOPs", "published params", "published mIoU"),
        align=("---", "---", "---:", "---:", "---", "---"),
        configs=(
            "dinov2/dinov2_vit-s14_linear_8xb2-40k_ade20k-512x512.yaml",
            "dinov2/dinov2_vit-b14_linear_8xb2-40k_ade20k-512x512.yaml",
            "dinov2/dinov2_vit-s14_ms_8xb2-40k_ade20k-640x640.yaml",
            "dinov2/dinov2_vit-b14_ms_8xb2-40k_ade20k-640x640.yaml",
            "dinov3/dinov3_vit-s16_linear_8xb2-40k_ade20k-512x512.yaml",
            "dinov3/dinov3_convnext-t_upernet_8xb2-amp-160k_ade20k-512x512.yaml",
            "dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.yaml",
            "vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.yaml",
        ),
        cells=_foundation_cells,
        published={  # the backbone's size from its paper/README; the recipe authors' ADE20K val mIoU
            "dinov2/dinov2_vit-s14_linear_8xb2-40k_ade20k-512x512.yaml": ("ViT-S/14 21 M", "44.3 (linear)"),
            "dinov2/dinov2_vit-b14_linear_8xb2-40k_ade20k-512x512.yaml": ("ViT-B/14 86 M", "47.3 (linear)"),
            "dinov2/dinov2_vit-s14_ms_8xb2-40k_ade20k-640x640.yaml": ("ViT-S/14 21 M", "47.2 (+ms)"),
            "dinov2/dinov2_vit-b14_ms_8xb2-40k_ade20k-640x640.yaml": ("ViT-B/14 86 M", "51.3 (+ms)"),
            "dinov3/dinov3_vit-s16_linear_8xb2-40k_ade20k-512x512.yaml": (
                "ViT-S/16 21 M",
                "none published for ViT-S (ViT-7B: 55.9)",
            ),
            "dinov3/dinov3_convnext-t_upernet_8xb2-amp-160k_ade20k-512x512.yaml": (
                "ConvNeXt-T 29 M; UPerNet ConvNeXt-T 60 M",
                "none published (ImageNet-1k weights: 46.11)",
            ),
            "dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.yaml": ("ViT-B/16 86 M", "46.97 (48.34 ms+flip)"),
            "vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.yaml": (
                "ViT-B/16 86 M",
                "47.71 (49.51 ms+flip)",
            ),
        },
    ),
}


def begin_marker(name: str) -> str:
    return f"<!-- flops-table: {name} -->"


def row_cells(name: str, config: str, root: Path, counted: dict[str, Any] | None = None) -> list[str]:
    """The cells of `config`'s row in table `name` (counted now unless `counted` is given)."""
    table = TABLES[name]
    row = counted or count_config(str(root / "configs" / config))
    return [*table.cells(config, row, root), *table.published.get(config, ())]


def render(name: str, rows: Iterable[list[str]]) -> str:
    """A Markdown table of `rows` under table `name`'s header."""
    table = TABLES[name]
    lines = ["| " + " | ".join(table.header) + " |", "| " + " | ".join(table.align) + " |"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def committed_rows(name: str, root: Path) -> dict[str, list[str]]:
    """The rows of table `name` as the docs page holds them now, by config."""
    text = (root / TABLES[name].page).read_text(encoding="utf-8")
    block = _block(text, name)
    rows = {}
    for line in block.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def _block(text: str, name: str) -> str:
    start, end = _span(text, name)
    return text[start:end].strip("\n")


def _span(text: str, name: str) -> tuple[int, int]:
    """Where table `name`'s lines are in `text` (between its markers)."""
    match = re.search(re.escape(begin_marker(name)) + r"\n(.*?)" + re.escape(END), text, re.S)
    if match is None:
        raise ValueError(f"{TABLES[name].page}: no {begin_marker(name)} ... {END} block")
    return match.start(1), match.end(1)


def write_table(name: str, root: Path, rows: list[list[str]]) -> bool:
    """Put the rendered table in its page; whether the page changed."""
    path = root / TABLES[name].page
    text = path.read_text(encoding="utf-8")
    start, end = _span(text, name)
    new = render(name, rows) + "\n"
    if text[start:end] == new:
        return False
    path.write_text(text[:start] + new + text[end:], encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    """`scripts/flops_table.py [--check] [NAME ...]`: rewrite (or check) the docs' tables."""
    import argparse

    parser = argparse.ArgumentParser(description="Rewrite (or --check) the docs' parameter/FLOP tables.")
    parser.add_argument("names", nargs="*", help=f"tables, of {', '.join(TABLES)} (default: all)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2], help="the checkout")
    args = parser.parse_args(argv)
    if unknown := [n for n in args.names if n not in TABLES]:
        parser.error(f"unknown table {', '.join(unknown)}; the tables are {', '.join(TABLES)}")
    status = 0
    for name in args.names or list(TABLES):
        rows = [row_cells(name, config, args.root) for config in TABLES[name].configs]
        if args.check:
            committed = committed_rows(name, args.root)
            wrong = [r[0] for r in rows if committed.get(r[0].strip("`")) != r]
            extra = sorted(set(committed) - {c for c in TABLES[name].configs})
            for config in wrong + extra:
                print(f"{TABLES[name].page}: row {config} differs from the code's count")
            status |= bool(wrong or extra)
        elif write_table(name, args.root, rows):
            print(f"rewrote the {name} table in {TABLES[name].page}")
    return status
