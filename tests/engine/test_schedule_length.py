"""Schedules that follow the run's length: `end: max_iters` scales with `train_cfg.max_iters=N`; a
schedule written for another length is built as written, with a warning naming its keys."""

import logging

import pytest
import torch
from engine_helpers import ROOT

from segaccel.config import load_config
from segaccel.engine.schedulers import build_lr_scheduler, resolve_schedule, schedule_length_warnings
from segaccel.registry import ConfigError


def lr_at(param_scheduler, max_iters, t, base_lr=0.01):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = build_lr_scheduler(opt, param_scheduler, max_iters)
    sched.load_state_dict({"last_iter": t})
    return sched.get_last_lr()[0]


def test_end_max_iters_follows_the_run_length():
    poly = [{"type": "PolyLR", "eta_min": 1e-4, "power": 0.9, "begin": 0, "end": "max_iters"}]
    for n in (30, 300, 160000):
        assert lr_at(poly, n, n // 2) == pytest.approx(1e-4 + (0.01 - 1e-4) * 0.5**0.9)
        assert lr_at(poly, n, n) == pytest.approx(1e-4)  # decayed fully at the last iteration
    assert schedule_length_warnings(poly, 30) == []


def test_relative_begin_and_end_resolve_against_max_iters():
    entries = [
        {"type": "LinearLR", "begin": 0, "end": 10},
        {"type": "PolyLR", "begin": "max_iters - 20", "end": "max_iters"},
    ]
    resolved = resolve_schedule(entries, 100)
    assert [(e["begin"], e["end"]) for e in resolved] == [(0, 10), (80, 100)]
    assert entries[1]["begin"] == "max_iters - 20"  # the config itself is left as written
    with pytest.raises(ConfigError, match=r"param_scheduler\.1\.end: 'max_iter'"):
        resolve_schedule([entries[0], {"type": "PolyLR", "end": "max_iter"}], 100)


def test_a_schedule_longer_than_the_run_warns_naming_the_key():
    warmup_poly = [
        {"type": "LinearLR", "start_factor": 1e-3, "begin": 0, "end": 100},
        {"type": "PolyLR", "begin": 100, "end": 4000},
    ]
    (late,) = schedule_length_warnings(warmup_poly, 300)
    assert "param_scheduler.1.end=4000" in late and "train_cfg.max_iters=300" in late
    assert "param_scheduler.0" not in late  # the warm-up ends inside the run: fine
    # the rate at the run's end, as written: PolyLR 200 steps into 3900, not decayed
    assert lr_at(warmup_poly, 300, 300) == pytest.approx(0.01 * (1 - 200 / 3900))


def test_a_schedule_shorter_than_the_run_warns_naming_the_key():
    short = [{"type": "PolyLR", "eta_min": 0.0, "begin": 0, "end": 100}]
    (early,) = schedule_length_warnings(short, 300)
    assert "param_scheduler.0.end=100" in early and "last 200 iterations" in early
    never = [
        {"type": "LinearLR", "begin": 0, "end": 10},
        {"type": "PolyLR", "begin": 400, "end": "max_iters"},
    ]
    assert any("param_scheduler.1.begin=400" in m for m in schedule_length_warnings(never, 300))


def test_build_lr_scheduler_logs_the_warning(caplog):
    caplog.set_level(logging.WARNING, logger="segaccel")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    build_lr_scheduler(opt, [{"type": "PolyLR", "begin": 0, "end": 4000}], 300)
    assert "param_scheduler.0.end=4000" in caplog.text


def test_quickstart_schedule_scales_with_a_max_iters_override():
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", ["train_cfg.max_iters=1000"])
    n = cfg["train_cfg"]["max_iters"]
    assert cfg["param_scheduler"][1]["end"] == "max_iters"
    assert schedule_length_warnings(cfg["param_scheduler"], n) == []
    # LinearLR warm-up to 100, then PolyLR(power 1) from 100 to 1000: half-way at 550
    assert lr_at(cfg["param_scheduler"], n, 550, base_lr=1e-3) == pytest.approx(1e-3 * 0.5)
    assert lr_at(cfg["param_scheduler"], n, n, base_lr=1e-3) == pytest.approx(0.0)


@pytest.mark.parametrize("k", [20, 40, 80, 160])
def test_base_schedules_end_at_max_iters(k):
    cfg = load_config(
        ROOT / "configs" / "_base_" / "schedules" / f"schedule_{k}k.yaml", ["train_cfg.max_iters=300"]
    )
    assert schedule_length_warnings(cfg["param_scheduler"], 300) == []
    assert lr_at(cfg["param_scheduler"], 300, 300) == pytest.approx(1e-4)
