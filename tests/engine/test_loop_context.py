"""The loops run on a `LoopContext` and call back through `LoopHooks`: no Runner needed.

A tiny SegFormer trained by `IterBasedTrainLoop` alone, with recording hooks and a stand-in
validation loop; the Runner implements every hook with the protocol's signature; and the loops'
modules never import the Runner, not even inside functions or under `TYPE_CHECKING`.
"""

import ast
import inspect
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from segaccel.config import load_config
from segaccel.data.samplers import InfiniteSampler
from segaccel.engine.build import build_split, model_config
from segaccel.engine.dataloaders import build_dataloader
from segaccel.engine.loop_context import LoopContext, LoopHooks, NoHooks, TrainingInterrupted, loop_settings
from segaccel.engine.loops import IterBasedTrainLoop
from segaccel.engine.runner import Runner
from segaccel.engine.schedulers import build_lr_scheduler
from segaccel.registry import MODELS, ConfigError

ENGINE = Path(__file__).resolve().parents[2] / "segaccel" / "engine"


class RecordingHooks(NoHooks):
    """Records every `after_train_iter`; asks for a stop once `stop_after` steps are done."""

    def __init__(self, stop_after=None):
        self.calls, self.stop_after = [], stop_after

    def after_train_iter(self, iteration, metrics):
        self.calls.append((iteration, metrics))

    def stop_requested(self):
        return self.stop_after is not None and self.calls[-1][0] >= self.stop_after

    def on_stop(self, iteration):
        return TrainingInterrupted(f"stopped at {iteration}", iteration, checkpoint=None)


class FakeValidation:
    def __init__(self):
        self.at = []

    def run(self, iteration=None):
        self.at.append(iteration)
        return {"mIoU": float(iteration)}


def train_alone(config, hooks, max_iters=4):
    """Train the tiny model with a loop fed only a LoopContext; returns (loop, context, validation)."""
    cfg = load_config(config, ["val_dataloader=null"])
    accelerator = Accelerator(cpu=True)
    dataset = build_split(cfg, "train_dataloader", accelerator, seed=0)
    model = MODELS.build(model_config(cfg, dataset.id2label))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = build_lr_scheduler(optimizer, cfg["param_scheduler"], max_iters)
    model, optimizer = accelerator.prepare(model, optimizer)
    validation = FakeValidation()
    context = LoopContext(
        accelerator,
        hooks=hooks,
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        val_loop=validation,
        train_dataset=dataset,
        max_iters=max_iters,
        **loop_settings(cfg),
    )
    loop = IterBasedTrainLoop(context, max_iters=max_iters, val_interval=2)
    sampler = InfiniteSampler(len(dataset), 2, seed=0, shuffle=True, rank=0, world_size=1, start_batch=0)
    loader = build_dataloader(
        dataset, cfg["train_dataloader"], training=True, device=accelerator.device, sampler=sampler
    )
    return loop, context, validation, iter(loader)


def test_a_train_loop_runs_on_a_context_and_calls_its_hooks(tiny_config, fresh_accelerate):
    hooks = RecordingHooks()
    loop, context, validation, batches = train_alone(tiny_config, hooks)
    metrics = loop.run(batches)
    assert hooks.calls == [(1, None), (2, {"mIoU": 2.0}), (3, None), (4, {"mIoU": 4.0})]
    assert validation.at == [2, 4] and metrics == {"mIoU": 4.0}
    assert int(next(iter(context.optimizer.state.values()))["step"]) == 4  # four optimizer steps
    assert context.lr_scheduler.last_iter == 4  # the schedule stepped once per step
    assert context.model.training  # back in training mode after validating


def test_a_stop_request_ends_the_loop_with_the_hooks_error(tiny_config, fresh_accelerate):
    hooks = RecordingHooks(stop_after=3)
    loop, _, _, batches = train_alone(tiny_config, hooks)
    with pytest.raises(TrainingInterrupted, match="stopped at 3") as info:
        loop.run(batches)
    assert info.value.iteration == 3 and loop.iter == 3 and len(hooks.calls) == 3


def test_the_runner_implements_every_hook():
    hooks = sorted(n for n, _ in inspect.getmembers(LoopHooks, inspect.isfunction) if not n.startswith("_"))
    assert hooks == ["after_train_iter", "on_nonfinite", "on_stop", "stop_requested", "write_overlays"]
    for implementation in (Runner, NoHooks):
        for name in hooks:
            expected = list(inspect.signature(getattr(LoopHooks, name)).parameters)
            assert list(inspect.signature(getattr(implementation, name)).parameters) == expected, name


def test_loop_settings_check_the_config():
    settings = loop_settings({"optim_wrapper": {"clip_grad": {"max_norm": 1}, "accumulative_counts": 2}})
    assert settings["clip_grad"] == {"max_norm": 1.0, "norm_type": 2.0}
    assert settings["accumulative_counts"] == 2 and settings["log_interval"] == 50
    with pytest.raises(ConfigError, match="accumulative_counts must be >= 1, got 0"):
        loop_settings({"optim_wrapper": {"accumulative_counts": 0}})
    with pytest.raises(ConfigError, match=r"clip_grad: unknown keys \['max'\]"):
        loop_settings({"optim_wrapper": {"clip_grad": {"max_norm": 1, "max": 2}}})
    with pytest.raises(ConfigError, match="skip_nonfinite belongs under optim_wrapper"):
        loop_settings({"skip_nonfinite": True})


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (functions and `if TYPE_CHECKING:` included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_loops_never_import_the_runner():
    # what the loops' modules import, followed through the engine's own modules
    seen, todo = set(), ["loops", "eval_loops", "train_step", "loop_context"]
    while todo:
        name = todo.pop()
        seen.add(name)
        for module in imported_modules(ENGINE / f"{name}.py"):
            parts = module.split(".")
            if parts[:2] == ["segaccel", "engine"] and len(parts) > 2 and parts[2] not in seen:
                if (ENGINE / f"{parts[2]}.py").is_file():
                    todo.append(parts[2])
    assert "runner" not in seen, sorted(seen)
    assert {"loops", "eval_loops", "train_step", "loop_context"} <= seen
