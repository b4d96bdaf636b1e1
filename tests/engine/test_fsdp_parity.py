"""FSDP2 through the real launch path, on CPU: `accelerate launch --config_file
accelerate_configs/fsdp2.yaml --num_processes 2 scripts/train.py ...` (two gloo processes; segaccel
shards the segmentor with `fully_shard`, engine.sharding).

- 6 optimizer steps of 2 processes x 2 images reach the weights of one process x 4 images within
  1e-6 (the same global batch): with gradient clipping on (max_norm 0.5, below every step's norm, so
  every step is clipped) and the quickstart's paramwise groups (head lr x10, no decay on norms and
  pos_block); so do 2 processes x 1 image x 2 accumulated micro-batches. The model is norm-exact:
  the tiny MiT has LayerNorms only and the head's BN is replaced by GroupNorm (BN's batch
  statistics over 2 images differ from those over 4); no dropout or drop path, no random flip.
- a run stopped by SIGTERM (sent to the launch's process group once iteration 2 is logged, as
  torchrun passes it on) saves a sharded checkpoint (`pytorch_model_fsdp_0/`, `optimizer_0/`, read
  back through `RestrictedLoadPlanner`) at the iteration it finished; `--resume` from it ends with
  the straight run's weights, optimizer state (AdamW's step count) and LR.
- the exported `model.safetensors` (written by the main process from the gathered weights) is the
  full model: equal to the sharded checkpoint's model state at the last iteration.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from engine_helpers import ROOT, TINY_CONFIG, TRAIN_SCRIPT, free_port, load_model_weights, read_scalars
from test_signals import read_until

from segaccel.engine.sharding import cpu_sharding_supported

PARITY = """
model:
  backbone: {{drop_path_rate: 0.0}}
  decode_head: {{dropout_ratio: 0.0, norm_cfg: {{type: GN, num_groups: 4, requires_grad: true}}}}
train_dataloader:
  dataset: {{pipeline: [{{type: PackSegInputs}}]}}
optim_wrapper:
  clip_grad: {{max_norm: 0.5, norm_type: 2}}
train_cfg: {{type: IterBasedTrainLoop, max_iters: 6, val_interval: 100}}
param_scheduler:
  - {{type: LinearLR, start_factor: 0.1, begin: 0, end: 2}}
  - {{type: PolyLR, power: 1.0, begin: 2, end: 6}}
default_hooks:
  checkpoint: {{interval: 2, max_keep_ckpts: 3, save_best: null}}
"""


def fsdp2_launch() -> list[str]:
    config = ROOT / "accelerate_configs" / "fsdp2.yaml"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    launch += ["--num_processes", "2", "--mixed_precision", "no"]
    return [*launch, "--main_process_port", str(free_port())]


def run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def stop_by_sigterm(cmd: list[str]) -> int:
    """Run `cmd` in its own process group, SIGTERM the group once iteration 2 is logged; the iteration
    the run says it stopped at."""
    proc = subprocess.Popen(
        [*cmd, "train_cfg.max_iters=100000"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out = read_until(proc, b"Iter(train) [     2/100000]", time.monotonic() + 180)
        os.killpg(proc.pid, signal.SIGTERM)
        _, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    text = (out + rest).decode(errors="replace")
    assert proc.returncode == 128 + signal.SIGTERM, text[-3000:]
    found = re.search(r"training stopped by SIGTERM at iteration (\d+)/100000; checkpoint saved", text)
    assert found, text[-3000:]
    return int(found.group(1))


def dcp_state(folder) -> dict:
    """A DCP folder's whole state (our own files: read back with torch's converter)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = folder.parent.parent / f"{folder.parent.name}_{folder.name}.pt"
    dcp_to_torch_save(str(folder), str(out))
    return torch.load(out, weights_only=False)


def flat(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from flat(value, f"{prefix}{key}.")
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            yield from flat(value, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("."), tree


@pytest.mark.skipif(not cpu_sharding_supported(), reason="this torch cannot fully_shard on CPU")
@pytest.mark.e2e
def test_fsdp2_two_processes_equal_one_and_resume_exactly(tmp_path, fresh_accelerate):
    (tmp_path / "tiny_base.yaml").write_text(TINY_CONFIG)
    config = tmp_path / "parity.yaml"
    config.write_text(f"_base_: [{tmp_path / 'tiny_base.yaml'}]\n" + PARITY.format())
    one, two, resumed = tmp_path / "one", tmp_path / "two", tmp_path / "resumed"
    four = "train_dataloader.batch_size=4"  # one process, the global batch of two processes x 2
    run([sys.executable, str(TRAIN_SCRIPT), str(config), "--work-dir", str(one), four])
    run([*fsdp2_launch(), str(TRAIN_SCRIPT), str(config), "--work-dir", str(two)])
    log = (two / "logs" / "train.log").read_text()
    assert "FSDP2 (fully_shard over 2 cpu processes): 4 units (TransformerEncoderLayer) and the root" in log
    assert "batch               : 2 per process x 2 processes x 1 accumulation = 4 per iteration" in log

    # 1. the same weights as one process on the same global batch, every step clipped
    a, b = load_model_weights(one / "model"), load_model_weights(two / "model")
    assert a.keys() == b.keys() and len(a) > 100
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-6, diff
    first = read_scalars(one)
    assert all(r["grad_norm"] > 0.5 for r in first)  # clipping acted on every step
    second = read_scalars(two)
    for r1, r2 in zip(first, second, strict=True):
        assert r1["lr"] == r2["lr"] and r1["loss"] == pytest.approx(r2["loss"], rel=1e-5)
        assert r1["grad_norm"] == pytest.approx(r2["grad_norm"], rel=1e-5)

    # ... and with gradient accumulation: 2 processes x 1 image x 2 micro-batches
    accum = tmp_path / "accum"
    micro = ["train_dataloader.batch_size=1", "optim_wrapper.accumulative_counts=2"]
    run([*fsdp2_launch(), str(TRAIN_SCRIPT), str(config), "--work-dir", str(accum), *micro])
    assert "1 per process x 2 processes x 2 accumulation = 4" in (accum / "logs" / "train.log").read_text()
    d = load_model_weights(accum / "model")
    diff = max((a[k] - d[k]).abs().max().item() for k in a)
    assert diff < 1e-6, diff

    # 2. the sharded checkpoint, and --resume from it
    iter2 = two / "checkpoints" / "iter_2"
    names = {p.name for p in iter2.iterdir()}
    assert {"pytorch_model_fsdp_0", "optimizer_0", "random_states_0.pkl", "random_states_1.pkl"} <= names
    shards = {".metadata", "__0_0.distcp", "__1_0.distcp"}  # one file per process
    assert {p.name for p in (iter2 / "optimizer_0").iterdir()} == shards
    stopped = stop_by_sigterm([*fsdp2_launch(), str(TRAIN_SCRIPT), str(config), "--work-dir", str(resumed)])
    assert 2 <= stopped < 6, stopped
    assert {p.name for p in (resumed / "checkpoints" / f"iter_{stopped}" / "optimizer_0").iterdir()} == shards
    resume = ["--work-dir", str(resumed), "--resume", "train_cfg.max_iters=6"]
    run([*fsdp2_launch(), str(TRAIN_SCRIPT), str(config), *resume])
    log = (resumed / "logs" / "train.log").read_text()
    assert f"resumed from {resumed / 'checkpoints' / f'iter_{stopped}'}" in log
    c = load_model_weights(resumed / "model")
    assert all(torch.equal(b[k], c[k]) for k in b)
    after = [(r["iter"], r["lr"], r["loss"]) for r in read_scalars(resumed) if r["iter"] > stopped]
    assert after == [(r["iter"], r["lr"], r["loss"]) for r in second[stopped:]]
    straight = dict(flat(dcp_state(two / "checkpoints" / "iter_6" / "optimizer_0")))
    again = dict(flat(dcp_state(resumed / "checkpoints" / "iter_6" / "optimizer_0")))
    assert straight.keys() == again.keys()
    steps = [v for k, v in straight.items() if k.endswith(".step")]
    assert steps and all(float(s) == 6.0 for s in steps)  # AdamW's step count
    for key, value in straight.items():
        same = torch.equal(value, again[key]) if isinstance(value, torch.Tensor) else value == again[key]
        assert same, key

    # 3. the export is the full model, gathered: equal to the sharded model state of the last step
    model_state = dcp_state(two / "checkpoints" / "iter_6" / "pytorch_model_fsdp_0")["model"]
    assert model_state.keys() == b.keys()
    assert all(torch.equal(model_state[k], b[k]) for k in b)
