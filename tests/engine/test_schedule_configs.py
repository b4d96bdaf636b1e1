"""The schedule configs carry MMSegmentation's values (configs/_base_/schedules/schedule_*.py)."""

import pytest
import torch
from engine_helpers import ROOT

from segaccel.config import load_config
from segaccel.engine.schedulers import build_lr_scheduler


@pytest.mark.parametrize("k", [20, 40, 80, 160])
def test_schedule_matches_mmsegmentation(k):
    cfg = load_config(ROOT / "configs" / "_base_" / "schedules" / f"schedule_{k}k.yaml")
    n = k * 1000
    assert cfg["optim_wrapper"]["optimizer"] == {
        "type": "SGD",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0005,
    }
    assert cfg["optim_wrapper"]["clip_grad"] is None and cfg["optim_wrapper"]["accumulative_counts"] == 1
    poly = {"type": "PolyLR", "eta_min": 1e-4, "power": 0.9, "begin": 0, "end": "max_iters"}
    assert cfg["param_scheduler"] == [poly]
    assert cfg["train_cfg"] == {"type": "IterBasedTrainLoop", "max_iters": n, "val_interval": n // 10}
    assert cfg["default_hooks"]["logger"]["interval"] == 50
    assert cfg["default_hooks"]["checkpoint"]["interval"] == n // 10
    # the learning rate halfway, by the closed form of PolyLR
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = build_lr_scheduler(opt, cfg["param_scheduler"], n)
    sched.load_state_dict({"last_iter": n // 2})
    assert sched.get_last_lr()[0] == pytest.approx(1e-4 + (0.01 - 1e-4) * 0.5**0.9)


def test_default_runtime_defaults():
    cfg = load_config(ROOT / "configs" / "_base_" / "default_runtime.yaml")
    assert cfg["load_from"] is None and cfg["resume"] is False and cfg["mixed_precision"] is None
    assert cfg["default_hooks"]["logger"] == {"interval": 50}
