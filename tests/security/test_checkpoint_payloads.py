"""A payload pickle in any file of a training checkpoint folder: `--resume` refuses it, nothing runs.

A tiny run is trained once (2 iterations, checkpoint `iter_2`). Each test copies it and puts a payload
pickle (`__reduce__` -> `os.system("touch MARKER")`, see security_helpers) in ONE file of the
checkpoint folder: every file a checkpoint holds, files Accelerate would read if present (a grad
scaler, a sampler, `pytorch_model.bin`, Accelerate's own `custom_checkpoint_0.pkl`), and any other
pickle. Resuming must fail with an error naming the file, before anything is restored, and the marker
must never appear. Through the Runner (`resume=True` and a path) and through `scripts/train.py`
(`--resume`, `--resume CKPT`, `resume=true`).
"""

from __future__ import annotations

import json
import re

import pytest
from security_helpers import TINY_CONFIG, assert_payload_is_live, copy_run, train, write_payload

from segaccel.config import load_config
from segaccel.engine.checkpoint import CheckpointError
from segaccel.engine.runner import Runner

OVERRIDES = [
    "train_cfg.val_interval=100",
    "default_hooks.checkpoint.interval=2",
    "default_hooks.checkpoint.save_best=null",
]
# file in checkpoints/iter_2 -> (payload form, what the error says)
PAYLOAD_FILES = {
    "optimizer.bin": ("torch", r"optimizer\.bin: refused: .*(posix|nt)\.system"),
    "random_states_0.pkl": ("torch", r"random_states_0\.pkl: refused: .*(posix|nt)\.system"),
    "segaccel_custom_0.pkl": ("torch", r"segaccel_custom_0\.pkl: refused: .*(posix|nt)\.system"),
    "scaler.pt": ("torch", r"scaler\.pt: refused"),
    "sampler.bin": ("pickle", r"sampler\.bin: refused"),
    "dl_state_dict.bin": ("torch", r"dl_state_dict\.bin: refused"),
    "pytorch_model.bin": ("torch", r"pytorch_model\.bin: refused"),
    "extra.pkl": ("pickle", r"extra\.pkl: refused"),
    "notes.txt": ("pickle", r"notes\.txt: refused"),  # pickle bytes under any name are checked
    "nested/states.pt": ("torch", r"nested/states\.pt: refused"),
    "custom_checkpoint_0.pkl": ("torch", r"custom_checkpoint_0\.pkl: Accelerate would unpickle"),
    "model.safetensors": ("torch", r"model\.safetensors: not a valid safetensors file"),
    "segaccel_state.json": ("pickle", r"segaccel_state\.json: not valid JSON"),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config file, work dir) of a finished 2-iteration run with `checkpoints/iter_2`."""
    root = tmp_path_factory.mktemp("trained")
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    result = train(config, root / "run", "train_cfg.max_iters=2", *OVERRIDES)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "run" / "checkpoints" / "iter_2" / "segaccel_custom_0.pkl").is_file()
    return config, root / "run"


def resume(config, work_dir, fresh_accelerate, resume=True):
    fresh_accelerate()
    cfg = load_config(config, ["train_cfg.max_iters=4", *OVERRIDES])
    return Runner(cfg, work_dir=work_dir, resume=resume).train()


def test_the_payloads_are_live(tmp_path):
    assert_payload_is_live(tmp_path)


@pytest.mark.parametrize("name", list(PAYLOAD_FILES))
def test_a_payload_in_any_checkpoint_file_is_refused_on_resume(name, trained, tmp_path, fresh_accelerate):
    config, run = trained
    work_dir = copy_run(run, tmp_path / "run")
    marker = tmp_path / "MARKER"
    form, message = PAYLOAD_FILES[name]
    write_payload(work_dir / "checkpoints" / "iter_2" / name, marker, form)
    with pytest.raises(CheckpointError, match=message):
        resume(config, work_dir, fresh_accelerate)
    assert not marker.exists()
    # nothing was trained or exported from the refused checkpoint
    assert sorted(p.name for p in (work_dir / "checkpoints").iterdir()) == ["iter_2"]


def test_a_checkpoint_path_given_explicitly_is_checked_the_same(trained, tmp_path, fresh_accelerate):
    config, run = trained
    work_dir = copy_run(run, tmp_path / "run")
    marker = tmp_path / "MARKER"
    ckpt = work_dir / "checkpoints" / "iter_2"
    write_payload(ckpt / "segaccel_custom_0.pkl", marker)
    with pytest.raises(CheckpointError, match="segaccel_custom_0.pkl: refused"):
        resume(config, tmp_path / "elsewhere", fresh_accelerate, resume=str(ckpt))
    assert not marker.exists()


def test_the_untouched_checkpoint_resumes(trained, tmp_path, fresh_accelerate):
    config, run = trained
    work_dir = copy_run(run, tmp_path / "run")
    resume(config, work_dir, fresh_accelerate)
    state = work_dir / "checkpoints" / "iter_4" / "segaccel_state.json"
    assert json.loads(state.read_text())["iteration"] == 4


@pytest.mark.e2e
@pytest.mark.parametrize(
    "how",
    [["--resume"], ["--resume", "{ckpt}"], ["resume=true"]],
    ids=["--resume", "--resume CKPT", "resume=true"],
)
def test_the_training_script_refuses_the_payload(how, trained, tmp_path):
    """The attack of the report: a payload in the schedule's state file, resumed by the script."""
    config, run = trained
    work_dir = copy_run(run, tmp_path / "run")
    marker = tmp_path / "MARKER"
    ckpt = work_dir / "checkpoints" / "iter_2"
    write_payload(ckpt / "segaccel_custom_0.pkl", marker)
    args = [a.format(ckpt=ckpt) for a in how]
    result = train(config, work_dir, *args, "train_cfg.max_iters=4", *OVERRIDES)
    assert result.returncode != 0
    refused = r"CheckpointError: .*segaccel_custom_0\.pkl: refused: the file asks to build or call (posix|nt)"
    assert re.search(refused, result.stderr), result.stderr[-3000:]
    assert not marker.exists()


def test_a_sharded_state_folder_is_checked_too(tmp_path):
    """torch.distributed.checkpoint (FSDP's sharded state) unpickles its `.metadata` itself: its own
    dataclasses pass, a payload there is refused. (A payload inside a `.distcp` data file is refused by
    `check_dcp_folder`: tests/engine/test_fsdp_wiring.py.)"""
    import torch
    import torch.distributed.checkpoint as dcp

    from segaccel.engine.checkpoint_files import check_checkpoint_files

    ckpt = tmp_path / "iter_2"
    model = torch.nn.Linear(3, 2)
    with pytest.warns(UserWarning, match="single process"):
        dcp.save({"model": model.state_dict()}, checkpoint_id=str(ckpt / "pytorch_model_fsdp_0"))
    for name in ("model.safetensors", "optimizer.bin", "random_states_0.pkl"):
        torch.save({}, ckpt / name)
    read = check_checkpoint_files(ckpt, process_index=0, num_custom=0)
    assert "pytorch_model_fsdp_0/.metadata" in read
    marker = tmp_path / "MARKER"
    write_payload(ckpt / "pytorch_model_fsdp_0" / ".metadata", marker, "pickle")
    with pytest.raises(CheckpointError, match=r"pytorch_model_fsdp_0/\.metadata: refused: .*(posix|nt)"):
        check_checkpoint_files(ckpt, process_index=0, num_custom=0)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"])
def test_a_deepspeed_state_folder_is_checked_too(name, tmp_path):
    """DeepSpeed (through Accelerate) keeps the model and optimizer in `pytorch_model/<tag>/*.pt`,
    torch.save zips it loads with `weights_only=False`: every one is read by the restricted reader
    first; a clean one passes, a payload in either is refused, naming it, and never runs."""
    import torch

    from segaccel.engine.checkpoint_files import check_checkpoint_files

    ckpt = tmp_path / "iter_2"
    state = ckpt / "pytorch_model" / "global_step2"
    state.mkdir(parents=True)
    (ckpt / "pytorch_model" / "latest").write_text("global_step2")  # DeepSpeed's tag file: plain text
    torch.save({"module": {"w": torch.zeros(2)}, "global_steps": 2}, state / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {"step": 2}}, state / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    torch.save({}, ckpt / "random_states_0.pkl")
    read = check_checkpoint_files(ckpt, process_index=0, num_custom=0)  # no model.safetensors needed
    assert read[f"pytorch_model/global_step2/{name}"] is not None
    marker = tmp_path / "MARKER"
    write_payload(state / name, marker, "torch")
    refused = rf"global_step2/{re.escape(name)}: refused: .*(posix|nt)\.system"
    with pytest.raises(CheckpointError, match=refused):
        check_checkpoint_files(ckpt, process_index=0, num_custom=0)
    assert not marker.exists()
