"""What a person sees: the banner, interval log lines, scalars.jsonl and a tensorboard tracker.

tensorboard is a test dependency (`dev` extra); the tracker test is skipped without it.
"""

import pytest
from engine_helpers import read_scalars

from segaccel.config import load_config
from segaccel.engine.runner import Runner

RUN = [
    "train_cfg={type: IterBasedTrainLoop, max_iters: 2, val_interval: 2}",
    "optim_wrapper.clip_grad={max_norm: 10.0}",
    "default_hooks.visualization.num_samples=2",
]


def test_banner_log_lines_and_tensorboard(tiny_config, tmp_path, fresh_accelerate):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work_dir = tmp_path / "run"
    Runner(
        load_config(tiny_config, [*RUN, "report_to=tensorboard"]), work_dir=work_dir, config_path="tiny.yaml"
    ).train()
    log = (work_dir / "logs" / "train.log").read_text()
    banner = log.split("segaccel training")[1].split("-" * 72)[1]
    for line in [
        "config              : tiny.yaml",
        f"work dir            : {work_dir}",
        "processes           : 1 (NO)",
        "device              : cpu",
        "mixed precision     : no",
        "batch               : 2 per process x 1 processes x 1 accumulation = 2 per iteration",
        "iterations          : 2 (starting at 0)",
        "train / val samples : 24 / 7",
        "parameters          : 0.",
        "trackers            : tensorboard",
    ]:
        assert line in banner, line
    # one line per iteration (logger.interval=1) with each loss, lr, grad norm, times and memory
    line = next(x for x in log.splitlines() if "Iter(train) [2/2]" in x)
    for key in (
        "lr:",
        "decode.loss_ce:",
        "decode.acc_seg:",
        "loss:",
        "grad_norm:",
        "time:",
        "data_time:",
        "memory:",
    ):
        assert key in line, key
    train = read_scalars(work_dir)
    assert [r["iter"] for r in train] == [1, 2]
    assert {"lr", "decode.loss_ce", "loss", "grad_norm", "time", "data_time", "memory"} <= set(train[0])
    assert "per-class results (val)" in log and "Iter(val) [2/2]" in log

    # the same scalars, and the validation overlays, in tensorboard's event file
    run_dirs = [p.parent for p in (work_dir / "logs").rglob("events.out.tfevents.*")]
    events = EventAccumulator(str(next(d for d in run_dirs if d.name == "run")))
    events.Reload()
    assert {"train/loss", "train/lr", "train/grad_norm", "val/mIoU", "val/aAcc"} <= set(
        events.Tags()["scalars"]
    )
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(
        [r["loss"] for r in train], rel=1e-6
    )
    assert events.Scalars("val/mIoU")[0].value == pytest.approx(read_scalars(work_dir, "val")[0]["mIoU"])
    assert sorted(events.Tags()["images"]) == ["val/overlay_00000", "val/overlay_00001"]
    assert len(list((work_dir / "vis" / "iter_2").glob("*.png"))) == 2
