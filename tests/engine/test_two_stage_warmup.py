"""EoMT's two-stage warm-up + poly schedule (`TwoStageWarmupPolyLR`) and `paramwise_cfg.split_backbone`."""

from __future__ import annotations

import pytest
from torch import nn

import segaccel.engine  # noqa: F401  (registers the schedulers)
from segaccel.engine.optim import build_optimizer
from segaccel.engine.schedulers import build_lr_scheduler


def eomt_lr(base_lr: float, step: int, backbone: bool, warmup=(500, 1000), total=5000, power=0.9) -> float:
    """EoMT's TwoStageWarmupPolySchedule.get_lr, written out for one param group."""
    head, vit = warmup
    if not backbone:
        if head > 0 and step < head:
            return base_lr * (step / head)
        return base_lr * (1 - max(0, step - head) / max(1, total - head)) ** power
    if step < head:
        return 0.0
    if step < head + vit:
        return base_lr * ((step - head) / vit)
    return base_lr * (1 - max(0, step - head - vit) / max(1, total - head - vit)) ** power


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(3, 3)
        self.decode_head = nn.Linear(3, 2)


def build(split: bool = True):
    model = Tiny()
    optim_wrapper = {
        "optimizer": {"type": "AdamW", "lr": 1e-4, "weight_decay": 0.05},
        "paramwise_cfg": {"custom_keys": {"backbone": {"lr_mult": 0.5}}, "split_backbone": split},
    }
    optimizer = build_optimizer(model, optim_wrapper)
    schedule = [{"type": "TwoStageWarmupPolyLR", "warmup_iters": [500, 1000]}]
    sched = build_lr_scheduler(optimizer, schedule, 5000)
    return model, optimizer, sched


def test_split_backbone_marks_the_groups():
    model, optimizer, _ = build()
    groups = {g["backbone"]: g for g in optimizer.param_groups}
    assert set(groups) == {True, False}
    assert [id(p) for p in groups[True]["params"]] == [id(p) for p in model.backbone.parameters()]
    assert groups[True]["lr_mult"] == 0.5 and groups[False]["lr_mult"] == 1.0


def test_schedule_equals_eomts_at_every_phase():
    _, optimizer, sched = build()
    seen = set()
    for step in range(5001):
        for group in optimizer.param_groups:
            expected = eomt_lr(1e-4 * group["lr_mult"], step, group["backbone"])
            assert group["lr"] == pytest.approx(expected, abs=1e-15), (step, group["backbone"])
        seen.add(step)
        sched.step()
    assert {0, 499, 500, 1499, 1500, 5000} <= seen


def test_resumed_schedule_is_the_same():
    _, optimizer, sched = build()
    for _ in range(1234):
        sched.step()
    lrs = [g["lr"] for g in optimizer.param_groups]
    _, optimizer2, sched2 = build()
    sched2.load_state_dict(sched.state_dict())
    assert [g["lr"] for g in optimizer2.param_groups] == lrs


def test_needs_marked_groups():
    with pytest.raises(ValueError, match="split_backbone: true"):
        build(split=False)
