"""Learning-rate schedules against their closed forms at chosen iterations."""

import math

import pytest
import torch

from segaccel.engine import schedulers as S
from segaccel.engine.schedulers import build_lr_scheduler


def make_optimizer(lrs=(0.1, 1.0)):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def lrs_over(sched, n):
    out = [sched.get_last_lr()]
    for _ in range(n):
        sched.step()
        out.append(sched.get_last_lr())
    return out


def test_warmup_then_poly_matches_mmseg_formula():
    opt = make_optimizer()
    sched = build_lr_scheduler(
        opt,
        [
            {"type": "LinearLR", "start_factor": 1e-6, "begin": 0, "end": 10},
            {"type": "PolyLR", "eta_min": 0.0, "power": 1.0, "begin": 10, "end": 110},
        ],
        max_iters=110,
    )
    lrs = lrs_over(sched, 110)
    # warm-up: factor goes linearly from 1e-6 to 1 over 10 steps
    assert lrs[0][0] == pytest.approx(0.1 * 1e-6)
    assert lrs[5][0] == pytest.approx(0.1 * (1e-6 + (1 - 1e-6) * 5 / 10))
    assert lrs[5][1] == pytest.approx(1.0 * (1e-6 + (1 - 1e-6) * 5 / 10))  # each group from its own base
    assert lrs[10][0] == pytest.approx(0.1)
    # poly: 0.1 * (1 - (t - 10) / 100)
    assert lrs[60][0] == pytest.approx(0.1 * 0.5)
    assert lrs[109][0] == pytest.approx(0.1 * 0.01)
    assert lrs[110][0] == pytest.approx(0.0, abs=1e-12)


def test_poly_power_and_eta_min():
    opt = make_optimizer((0.01,))
    sched = build_lr_scheduler(
        opt, {"type": "PolyLR", "eta_min": 1e-4, "power": 0.9, "begin": 0, "end": 200}, 200
    )
    lrs = lrs_over(sched, 200)
    for t in (0, 37, 100, 199, 200):
        assert lrs[t][0] == pytest.approx(1e-4 + (0.01 - 1e-4) * (1 - t / 200) ** 0.9)


def test_cosine_step_multistep():
    cos = S.CosineAnnealingLR(eta_min=0.0, begin=0, end=100)
    assert cos(1.0, 50, 100) == pytest.approx(0.5)
    assert cos(1.0, 25, 100) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    step = S.StepLR(step_size=30, gamma=0.1)
    assert step(1.0, 29, 100) == pytest.approx(1.0) and step(1.0, 61, 100) == pytest.approx(0.01)
    multi = S.MultiStepLR(milestones=[10, 40], gamma=0.5)
    assert [multi(1.0, t, 100) for t in (9, 10, 39, 40)] == [1.0, 0.5, 0.5, 0.25]


def test_state_dict_resume_gives_same_lr():
    opt = make_optimizer()
    cfg = [{"type": "PolyLR", "power": 1.0, "begin": 0, "end": 50}]
    a = build_lr_scheduler(opt, cfg, 50)
    for _ in range(20):
        a.step()
    b = build_lr_scheduler(make_optimizer(), cfg, 50)
    b.load_state_dict(a.state_dict())
    assert b.get_last_lr() == pytest.approx(a.get_last_lr())
    assert b.get_last_lr()[0] == pytest.approx(0.1 * (1 - 20 / 50))


def test_unknown_scheduler_type_names_key():
    with pytest.raises(ValueError, match=r"param_scheduler\.0\.type.*'PolyLr'.*PolyLR"):
        build_lr_scheduler(make_optimizer(), [{"type": "PolyLr"}], 10)
