"""The docs' FLOP tables are the code's count: recount cheap rows and compare with the committed pages.

Counting on the `meta` device is shape-only (no arithmetic), so a row costs about a second; the
whole set is checked by `python scripts/flops_table.py --check`.
"""

from pathlib import Path

import pytest
import torch

from segaccel.benchmark.flops import build_counted_model, count_config, forward_flops, load_model_config
from segaccel.benchmark.flops_table import TABLES, committed_rows, render, row_cells

ROOT = Path(__file__).resolve().parents[2]
CHEAP = [
    ("zoo", "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.yaml"),
    ("zoo", "segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.yaml"),
    ("zoo", "fcn/fcn_r50-d8_4xb2-80k_cityscapes-512x1024.yaml"),
    ("foundation", "dinov3/dinov3_vit-s16_linear_8xb2-40k_ade20k-512x512.yaml"),
]


@pytest.mark.parametrize(("name", "config"), CHEAP, ids=[c.split("/")[1][:-5] for _, c in CHEAP])
def test_committed_row_equals_the_code_count(name, config):
    assert committed_rows(name, ROOT)[config] == row_cells(name, config, ROOT)


@pytest.mark.parametrize("name", list(TABLES))
def test_each_table_holds_exactly_its_configs_in_order(name):
    table = TABLES[name]
    committed = committed_rows(name, ROOT)
    assert list(committed) == list(table.configs)
    assert all((ROOT / "configs" / c).is_file() for c in table.configs)
    assert all(len(cells) == len(table.header) for cells in committed.values())
    # the page's block is exactly what render() makes of its rows (nothing edited by hand around them)
    text = (ROOT / table.page).read_text()
    assert render(name, committed.values()) in text


def test_every_shipped_config_has_a_row():
    shipped = {str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").glob("*/*.yaml")}
    shipped = {c for c in shipped if not c.startswith("_base_")}
    in_tables = {c for t in TABLES.values() for c in t.configs}
    assert shipped == in_tables


def test_meta_device_count_equals_a_real_forward_count():
    """The shortcut the table uses (meta: shapes only) gives the CPU's figure exactly."""
    config = str(ROOT / "configs" / CHEAP[0][1])
    cfg = load_model_config(config)
    torch.manual_seed(0)
    real = forward_flops(build_counted_model(cfg, "cpu"), (64, 96))
    meta = forward_flops(build_counted_model(cfg, "meta"), (64, 96))
    assert real == meta > 0
    row = count_config(config, (64, 96))
    assert row["counted_on"] == "meta" and row["GFLOPs"] * 1e9 == real and row["GMACs"] * 2 == row["GFLOPs"]
