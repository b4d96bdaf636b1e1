"""`ShardedCheckpoint` (engine.sharding), in one process: the model and optimizer states it saves
(`pytorch_model_fsdp_0/`, `optimizer_0/`) come back exactly, and its load goes through the
restricted reader: a pickle payload in the optimizer's param groups is refused, never run."""

from __future__ import annotations

import pytest
import torch
from test_fsdp_wiring import Payload
from torch import nn

from segaccel.engine.checkpoint_files import CheckpointError
from segaccel.engine.sharding import MODEL_DIR, OPTIMIZER_DIR, ShardedCheckpoint


def _trained(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(seed + 1):
        model(torch.randn(2, 4)).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_sharded_checkpoint_round_trip_and_payload_refused(tmp_path):
    model, optimizer = _trained(2)
    ShardedCheckpoint(model, optimizer).save(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {MODEL_DIR, OPTIMIZER_DIR}
    other, other_opt = _trained(0)  # different weights, one step instead of three
    ShardedCheckpoint(other, other_opt).load(tmp_path / "ckpt")
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    state, back = optimizer.state_dict()["state"], other_opt.state_dict()["state"]
    assert float(back[0]["step"]) == 3.0
    for i in state:
        assert all(torch.equal(state[i][k], back[i][k]) for k in ("exp_avg", "exp_avg_sq", "step"))

    marker = tmp_path / "MARKER"
    # a value the loading side asks for (DCP reads only the keys of the state it fills)
    optimizer.param_groups[0]["lr"] = Payload(marker)
    ShardedCheckpoint(model, optimizer).save(tmp_path / "bad")
    # (DCP's own `dcp.load` of the same folder runs it: touches the marker)
    with pytest.raises(CheckpointError, match=r"(posix|os)\.system"):
        ShardedCheckpoint(other, other_opt).load(tmp_path / "bad")
    assert not marker.exists()
