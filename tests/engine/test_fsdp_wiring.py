"""FSDP2 / DeepSpeed wiring, as far as it goes without a GPU.

- every file in accelerate_configs/ is a valid Accelerate config, and `accelerate launch` turns it
  into the settings each process reads (distributed type, FSDP version and wrap policy, ZeRO stage);
- Accelerate's FSDP2 plugin built from `accelerate_configs/fsdp2.yaml` resolves its
  TRANSFORMER_BASED_WRAP policy to our backbones' block classes (`_no_split_modules`);
- two gloo processes shard a segmentor with `fully_shard` (`engine.sharding.shard_model`): the
  optimizer's paramwise groups (lr/decay multipliers, frozen parts) are those of the unsharded model,
  BN buffers agree across processes after training forwards on different data, and the full state
  dict gathered on the main process is the model's;
- a sharded (DCP) state holding a pickle payload is refused before anything runs it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed.checkpoint as dcp
from engine_helpers import ROOT, TINY_CONFIG, free_port
from torch import nn

from segaccel.engine.checkpoint_files import CheckpointError, check_checkpoint_files, check_dcp_folder
from segaccel.engine.sharding import (
    cpu_sharding_supported,
    declare_no_split_modules,
    restricted_load,
    shard_model,
    wrap_policy,
)

CONFIGS = ROOT / "accelerate_configs"


def launch_env(name: str) -> dict[str, str]:
    """The environment `accelerate launch --config_file accelerate_configs/<name>.yaml` gives each process."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / f"{name}.yaml"), "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:  # as `accelerate launch` does before its DeepSpeed launcher
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


def test_every_accelerate_config_is_valid_and_says_what_it_is():
    from accelerate.commands.config.config_args import load_config_from_file

    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert names == ["deepspeed_zero2", "deepspeed_zero3", "fsdp2", "multi_gpu", "multi_node", "single_gpu"]
    kinds = {n: load_config_from_file(str(CONFIGS / f"{n}.yaml")).distributed_type.value for n in names}
    assert kinds == {
        "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED", "fsdp2": "FSDP",
        "multi_gpu": "MULTI_GPU", "multi_node": "MULTI_GPU", "single_gpu": "NO",
    }
    fsdp = launch_env("fsdp2")
    assert fsdp["ACCELERATE_USE_FSDP"] == "true" and fsdp["FSDP_VERSION"] == "2"
    assert fsdp["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["FSDP_STATE_DICT_TYPE"] == "SHARDED_STATE_DICT"
    for stage in (2, 3):
        ds = launch_env(f"deepspeed_zero{stage}")
        assert ds["ACCELERATE_USE_DEEPSPEED"] == "true"
        assert ds["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == str(stage)
        assert ds["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"] == "1"
        assert ds["ACCELERATE_GRADIENT_CLIPPING"] == "1.0"
    node = launch_env("multi_node")
    assert node["ACCELERATE_MIXED_PRECISION"] == "bf16"
    slurm = (CONFIGS / "slurm_multi_node.sh").read_text()
    assert "--machine_rank \\$SLURM_NODEID" in slurm and "accelerate_configs/multi_node.yaml" in slurm


def _tiny_segformer() -> nn.Module:
    import segaccel.models  # noqa: F401  (registers the parts)
    from segaccel.registry import MODELS

    return MODELS.build(_tiny_config_dict()["model"], key="model")


def _tiny_config_dict() -> dict:
    from segaccel.config import load_config

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tiny.yaml"
        path.write_text(TINY_CONFIG)
        return load_config(path)


def _backbones() -> dict[str, tuple[nn.Module, set[str]]]:
    from segaccel.models.backbones.convnext import ConvNeXt
    from segaccel.models.backbones.resnet import ResNetV1c
    from segaccel.models.backbones.swin import SwinTransformer
    from segaccel.models.backbones.timm_backbone import TimmBackbone

    vit = TimmBackbone("vit_base_patch16_224", out_indices=[0, 1], model_kwargs={"depth": 2, "embed_dim": 48})
    return {
        "segformer (MiT)": (_tiny_segformer(), {"TransformerEncoderLayer"}),
        "swin": (SwinTransformer(embed_dims=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)), {"SwinBlock"}),
        "convnext": (ConvNeXt(arch={"depths": [1, 1, 2, 1], "channels": [8, 16, 32, 64]}), {"ConvNeXtBlock"}),
        "resnet": (ResNetV1c(depth=50, base_channels=4, stem_channels=8), {"Bottleneck"}),
        "vit (timm)": (vit, {"Block"}),
    }


def test_accelerate_fsdp2_plugin_wraps_our_blocks(monkeypatch):
    """The plugin read from fsdp2.yaml's launch settings picks exactly the backbone blocks as units."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    for key, value in launch_env("fsdp2").items():
        monkeypatch.setenv(key, value)
    for name, (model, blocks) in _backbones().items():
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True, name
        assert set(declare_no_split_modules(model)) == blocks, name
        policy = wrap_policy(model, plugin)
        picked = [m for m in model.modules() if policy(m)]
        expected = [m for m in model.modules() if type(m).__name__ in blocks]
        assert picked == expected and len(picked) >= 2, name
        # and the FSDP1 path of the same plugin resolves the same classes
        plugin.set_auto_wrap_policy(model)
        assert {c.__name__ for c in plugin.auto_wrap_policy.keywords["transformer_layer_cls"]} == blocks, name


# --- two gloo processes ----------------------------------------------------------------------------
PARAMWISE = {
    "optimizer": {"type": "AdamW", "lr": 1e-3, "weight_decay": 0.01},
    "paramwise_cfg": {"custom_keys": {"head": {"lr_mult": 10.0}, "norm": {"decay_mult": 0.0}}},
}


def _groups(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[dict]:
    names = {id(p): n for n, p in model.named_parameters()}
    groups = optimizer.param_groups
    return [{"params": sorted(names[id(p)] for p in g["params"]), **{k: g[k] for k in KEYS}} for g in groups]


KEYS = ("lr", "weight_decay", "lr_mult", "decay_mult")


def _worker(rank: int, world: int, port: int, out: str) -> None:
    from types import SimpleNamespace

    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from segaccel.engine.optim import build_optimizer
    from segaccel.engine.sharding import full_state_dict, is_sharded, shard_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = _tiny_segformer()
    for p in model.backbone.layers[0].parameters():  # a frozen part
        p.requires_grad_(False)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before = _groups(model, build_optimizer(model, PARAMWISE))
    accelerator = SimpleNamespace(
        device=torch.device("cpu"), num_processes=world, native_amp=False, is_main_process=rank == 0
    )
    plugin = SimpleNamespace(reshard_after_forward=True, auto_wrap_policy=None)
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    plugin.auto_wrap_policy, plugin.transformer_cls_names_to_wrap = transformer_auto_wrap_policy, None
    shard_model(model, accelerator, plugin)
    optimizer = build_optimizer(model, PARAMWISE)
    after = _groups(model, optimizer)
    sharded = [n for n, p in model.named_parameters() if isinstance(p, DTensor)]
    # training forwards on different data per process: BN (the head's) buffers must still agree
    model.train()
    from segaccel.benchmark.train import make_batch

    for step in range(2):
        batch = make_batch(2, (32, 48), 4, seed=10 * rank + step)
        data = model.data_preprocessor(batch, training=True)
        losses = model(data["inputs"], data["data_samples"], mode="loss")
        sum(v for k, v in losses.items() if "loss" in k).backward()
        optimizer.step()
        optimizer.zero_grad()
    bn = model.decode_head.fusion_conv.bn
    stats = torch.cat([bn.running_mean, bn.running_var]).tolist()
    model.eval()
    full = full_state_dict(model)
    main = rank == 0
    seg = "decode_head.conv_seg.weight"
    frozen = [k for k in before_state if k.startswith("backbone.layers.0.")]
    result = {
        "before": before,
        "after": after,
        "sharded": len(sharded),
        "params": len(list(model.parameters())),
        "is_sharded": is_sharded(model),
        "stats": stats,
        "frozen_unchanged": main and all(torch.equal(full[k], before_state[k]) for k in frozen),
        "full_keys": main and sorted(full) == sorted(before_state),
        "trained_changed": main and not torch.equal(full[seg], before_state[seg]),
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.skipif(not cpu_sharding_supported(), reason="this torch cannot fully_shard on CPU")
def test_two_gloo_processes_shard_with_the_same_param_groups_and_agreeing_buffers(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["is_sharded"] and r0["sharded"] == r0["params"] > 0  # every parameter is a DTensor
    # the paramwise groups: the same parameter names, lr and weight decay before and after sharding
    assert r0["after"] == r0["before"] == r1["after"]
    lrs = sorted({g["lr"] for g in r0["after"]})
    assert lrs == pytest.approx([1e-3, 1e-2]) and {g["weight_decay"] for g in r0["after"]} == {0.0, 0.01}
    assert not any(n.startswith("backbone.layers.0.") for g in r0["after"] for n in g["params"])
    assert r0["frozen_unchanged"] and r0["trained_changed"] and r0["full_keys"]
    assert r0["stats"] == r1["stats"]  # BN running statistics agree across the processes
    assert any(abs(v) > 1e-4 for v in r0["stats"][: len(r0["stats"]) // 2])  # and were updated


# --- sharded states and pickle payloads -------------------------------------------------------------
class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_payload_in_a_sharded_state_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    folder = tmp_path / "ckpt" / "optimizer_0"
    groups = [{"lr": 0.1, "hook": Payload(marker)}]
    state = {"optimizer": {"state": {"w": torch.arange(4.0)}, "param_groups": groups}}
    dcp.save(state, checkpoint_id=str(folder))
    (tmp_path / "ckpt" / "pytorch_model_fsdp_0").mkdir()
    # the payload is live: DCP's own reader runs it
    target = {"optimizer": {"state": {"w": torch.zeros(4)}, "param_groups": [{"lr": 0.0, "hook": None}]}}
    dcp.load(target, checkpoint_id=str(folder))
    assert marker.exists()
    marker.unlink()
    payload = r"(posix|os)\.system"
    with pytest.raises(CheckpointError, match=r"refused: .*param_groups.*asks to build or call " + payload):
        check_dcp_folder(folder)
    torch.save({"random_state": 1}, tmp_path / "ckpt" / "random_states_0.pkl")
    with pytest.raises(CheckpointError, match=payload):  # also from the whole checkpoint's check
        check_checkpoint_files(tmp_path / "ckpt", 0, 0)
    with pytest.raises(CheckpointError, match=payload):
        restricted_load(target, folder)
    assert not marker.exists()
    # a clean state goes through both, values as saved
    clean = tmp_path / "clean"
    dcp.save({"m": {"w": torch.arange(3.0), "lr": 0.25, "betas": (0.9, 0.99)}}, checkpoint_id=str(clean))
    check_dcp_folder(clean)
    back = {"m": {"w": torch.zeros(3), "lr": 0.0, "betas": (0.0, 0.0)}}
    restricted_load(back, clean)
    assert torch.equal(back["m"]["w"], torch.arange(3.0)) and back["m"]["lr"] == 0.25
    assert tuple(back["m"]["betas"]) == (0.9, 0.99)


@pytest.mark.skipif(cpu_sharding_supported(), reason="this torch shards on CPU processes")
def test_an_old_torch_refuses_cpu_sharding_with_what_to_do():
    accelerator = SimpleNamespace(device=torch.device("cpu"))
    with pytest.raises(RuntimeError, match="FSDP2 on CPU processes needs a newer torch than"):
        shard_model(nn.Linear(2, 2), accelerator)
