"""Sharded training (FSDP2): what Accelerate applies on GPUs, applied by segaccel where it does not.

`accelerate launch --config_file accelerate_configs/fsdp2.yaml` sets FSDP2 up through Accelerate's
plugin: on GPUs, `accelerator.prepare` shards the model with PyTorch's `fully_shard`, one unit per
block class the model names in `_no_split_modules` (TRANSFORMER_BASED_WRAP), then the root. On
processes without a GPU Accelerate ignores the FSDP settings (it runs gloo DDP); there segaccel
shards the model itself, the same way (`shard_model`: the same plugin read from the same launch
settings, the same wrap policy function, `fully_shard` on a gloo device mesh), so that the sharded
path can be run and tested on any machine:

- the backbones declare their blocks (`_no_split_modules` on MiT, Swin, ConvNeXt, ResNet, timm
  backbones); `declare_no_split_modules` collects them on the root, where Accelerate reads them;
- the optimizer is built on the sharded parameters (same names, so the paramwise groups — lr and
  decay multipliers, frozen parts, layer decay — are the groups of the unsharded model);
- BatchNorm: SyncBN with several CUDA processes (`engine.devices`); otherwise each process
  normalises with its own batch's statistics and the running statistics are averaged over the
  processes after every training forward, so the buffers agree across processes (DDP instead
  broadcasts process 0's before each forward);
- checkpoints: the model and optimizer states are saved sharded with `torch.distributed.checkpoint`
  in Accelerate's layout (`pytorch_model_fsdp_0/`, `optimizer_0/`) from `accelerator.save_state`'s
  hooks, and read back through `RestrictedLoadPlanner` (no pickle in them is run; see
  `engine.checkpoint_files.check_dcp_folder`);
- the exported model: `full_state_dict` gathers the full weights on the main process.
"""

from __future__ import annotations

import atexit
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

from segaccel.engine.logging import logger

MODEL_DIR = "pytorch_model_fsdp_0"
OPTIMIZER_DIR = "optimizer_0"
# the root's methods that run the model besides `forward`: FSDP2 gathers the root's own parameters
# (patch embeddings, head) only around these
FORWARD_METHODS = ("predict",)


def no_split_module_names(model: nn.Module) -> list[str]:
    """The block class names every part of `model` declares in `_no_split_modules` (sorted, unique)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return sorted(names)


def declare_no_split_modules(model: nn.Module) -> list[str]:
    """Set `model._no_split_modules` (the root, where Accelerate's FSDP wrap policy reads it) to what
    its parts declare; returns the names."""
    names = no_split_module_names(model)
    model._no_split_modules = names
    return names


def sharding_requested(accelerator: Accelerator) -> bool:
    """Whether segaccel shards the model itself: FSDP2 asked by the launch (`accelerate launch` with an
    FSDP2 config sets `ACCELERATE_USE_FSDP=true`, `FSDP_VERSION=2`) on CPU processes, where Accelerate
    does not apply it. On GPUs Accelerate does (`accelerator.is_fsdp2`)."""
    asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if not asked or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return False
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise ValueError(
            f"FSDP_VERSION={version}: without GPUs segaccel shards with FSDP2 only (fsdp_version: 2 in "
            "the Accelerate config, as accelerate_configs/fsdp2.yaml)"
        )
    return True


def fsdp2_plugin() -> Any:
    """Accelerate's FSDP plugin as the launch settings describe it (read from the environment)."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin()


def wrap_policy(model: nn.Module, plugin: Any = None) -> Callable[[nn.Module], bool]:
    """The function Accelerate's FSDP2 uses to pick the modules sharded as units (`_no_split_modules`
    declared first); a model without declared blocks is sharded as one unit."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    names = declare_no_split_modules(model)
    plugin = plugin if plugin is not None else fsdp2_plugin()
    name_blocks_on_plugin(plugin, names)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    return policy if policy is not None else (lambda module: False)


def name_blocks_on_plugin(plugin: Any, names: list[str]) -> None:
    """Write the declared block classes into the plugin's `transformer_cls_names_to_wrap` when the
    launch config names none: Accelerate < 1.14 then wraps no block at all under FSDP2 (only the root,
    so nothing is sharded block by block); 1.14 and later read `_no_split_modules` themselves."""
    if plugin is not None and names and getattr(plugin, "transformer_cls_names_to_wrap", []) is None:
        plugin.transformer_cls_names_to_wrap = list(names)


def cpu_sharding_supported() -> bool:
    """Whether this torch's `fully_shard` runs on CPU processes: its collectives record events on the
    device's stream, which torch 2.6's CPU stream stand-in cannot (`torch.cpu.Stream.record_event`)."""
    return hasattr(torch.cpu.Stream(), "record_event")


def shard_model(model: nn.Module, accelerator: Accelerator, plugin: Any = None) -> nn.Module:
    """Shard `model` in place with `fully_shard` over all processes, as Accelerate's FSDP2 does.

    Every module the wrap policy picks is a unit (innermost first), then the root; the root's
    `predict` is registered as a forward method (`FORWARD_METHODS`). With mixed
    precision the forward runs under Accelerate's autocast. After each training forward the
    floating-point buffers (BN running statistics) are averaged over the processes, so they agree.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if accelerator.device.type == "cpu" and not cpu_sharding_supported():
        raise RuntimeError(
            f"FSDP2 on CPU processes needs a newer torch than {torch.__version__} (its fully_shard "
            "cannot run on CPU streams); upgrade torch, or launch on GPUs, or drop the FSDP config"
        )
    plugin = plugin if plugin is not None else fsdp2_plugin()
    policy = wrap_policy(model, plugin)
    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    reshard = plugin.reshard_after_forward if isinstance(plugin.reshard_after_forward, bool) else True
    units = [m for m in model.modules() if m is not model and policy(m)]
    names = sorted({type(m).__name__ for m in units})  # before fully_shard renames the classes
    for module in reversed(units):  # children before parents
        fully_shard(module, mesh=mesh, reshard_after_forward=reshard)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard)
    from torch.distributed.fsdp import register_fsdp_forward_method

    for method in FORWARD_METHODS:  # validation and pictures call `predict`, not `forward`
        if callable(getattr(model, method, None)):
            register_fsdp_forward_method(model, method)
    if accelerator.native_amp:
        from accelerate.utils import get_mixed_precision_context_manager

        autocast = get_mixed_precision_context_manager(accelerator.native_amp, accelerator.autocast_handler)
        model.forward = autocast(model.forward)
    model.register_forward_hook(_average_buffers)
    atexit.register(_close_process_group)
    if accelerator.is_main_process:
        logger.info(
            f"FSDP2 (fully_shard over {accelerator.num_processes} {accelerator.device.type} processes): "
            f"{len(units)} units ({', '.join(names) or 'none: the whole model is one'}) and the root"
        )
    return model


def shard_if_requested(model: nn.Module, accelerator: Accelerator) -> nn.Module:
    """Declare the model's blocks on its root (for Accelerate's FSDP2 on GPUs) and shard it here when
    the launch asks for FSDP2 on CPU processes (`sharding_requested`)."""
    names = declare_no_split_modules(model)
    name_blocks_on_plugin(getattr(accelerator.state, "fsdp_plugin", None), names)
    return shard_model(model, accelerator) if sharding_requested(accelerator) else model


def prepare_for_training(
    accelerator: Accelerator, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: dict[str, Any]
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """`accelerator.prepare` the model and optimizer (DDP, Accelerate's FSDP2/DeepSpeed), except a
    model segaccel sharded itself: Accelerate would wrap that in DDP, so it is left as it is and its
    state is checkpointed by `ShardedCheckpoint`. Then the config's `compile:` (`engine.compile`)."""
    from segaccel.engine.compile import compile_model

    if is_sharded(model) and not getattr(accelerator, "is_fsdp2", False):
        ShardedCheckpoint(model, optimizer).attach(accelerator)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    return compile_model(model, cfg.get("compile"), accelerator.unwrap_model(model)), optimizer


def prepare_for_evaluation(accelerator: Accelerator, model: nn.Module, cfg: dict[str, Any]) -> nn.Module:
    """`accelerator.prepare_model(model, evaluation_mode=True)`, then the config's `compile:`."""
    from segaccel.engine.compile import compile_model

    prepared = accelerator.prepare_model(model, evaluation_mode=True)
    return compile_model(prepared, cfg.get("compile"), accelerator.unwrap_model(prepared))


def _average_buffers(module: nn.Module, args: Any, output: Any) -> None:
    """After a training forward, each process's BN running statistics (floating-point buffers) are
    replaced by their mean over the processes, so that all processes hold the same."""
    if not (module.training and dist.is_initialized() and dist.get_world_size() > 1):
        return
    world = dist.get_world_size()
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf.data, op=dist.ReduceOp.SUM)
            buf.data.div_(world)


def _close_process_group() -> None:
    """At exit, after a sharded run: destroy the gloo process group before the interpreter tears its
    threads down (left alive, a process aborts with `terminate called without an active exception`)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_sharded(model: nn.Module) -> bool:
    """Whether `model` (or a part of it) is sharded with `fully_shard` (FSDP2)."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of a sharded model on the main process, on the CPU; every
    process must call it (an all-gather), the others get an empty dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def exportable_model(model: nn.Module, build: Callable[[], nn.Module], is_main: bool) -> nn.Module | None:
    """A plain (unsharded) copy of sharded `model` for the export on the main process: `build()` a
    new one there and load the gathered full weights (every process must call it). An unsharded
    `model` is returned as it is."""
    if not is_sharded(model):
        return model
    state = full_state_dict(model)
    if not is_main:
        return None
    plain = build()
    plain.load_state_dict(state, strict=True)
    return plain


class ShardedCheckpoint:
    """Saves and restores a sharded model and its optimizer with `torch.distributed.checkpoint`, from
    `accelerator.save_state`/`load_state` (registered as their hooks by `attach`).

    Layout as Accelerate's FSDP `SHARDED_STATE_DICT`: `pytorch_model_fsdp_0/` holds `{"model": ...}`,
    `optimizer_0/` holds `{"optimizer": ...}`, one `__<rank>_0.distcp` file per process and a
    `.metadata`. Reading goes through `RestrictedLoadPlanner`.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer

    def attach(self, accelerator: Accelerator) -> None:
        accelerator.register_save_state_pre_hook(lambda models, weights, folder: self.save(Path(folder)))
        accelerator.register_load_state_pre_hook(lambda models, folder: self.load(Path(folder)))

    def save(self, folder: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        dcp.save({"model": get_model_state_dict(self.model)}, checkpoint_id=str(folder / MODEL_DIR))
        optim = get_optimizer_state_dict(self.model, self.optimizer)
        dcp.save({"optimizer": optim}, checkpoint_id=str(folder / OPTIMIZER_DIR))

    def load(self, folder: Path) -> None:
        from torch.distributed.checkpoint.state_dict import (
            get_model_state_dict,
            get_optimizer_state_dict,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        model_state = {"model": get_model_state_dict(self.model)}
        restricted_load(model_state, folder / MODEL_DIR)
        set_model_state_dict(self.model, model_state["model"])
        optim_state = {"optimizer": get_optimizer_state_dict(self.model, self.optimizer)}
        restricted_load(optim_state, folder / OPTIMIZER_DIR)
        set_optimizer_state_dict(self.model, self.optimizer, optim_state["optimizer"])


def restricted_load(state: dict[str, Any], folder: Path) -> None:
    """`dcp.load` of `folder` into `state` through `RestrictedLoadPlanner`; a refused item raises our
    `CheckpointError` itself (DCP wraps errors of the reading ranks in its `CheckpointException`)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    from segaccel.engine.checkpoint_files import CheckpointError

    try:
        dcp.load(state, checkpoint_id=str(folder), planner=RestrictedLoadPlanner())
    except CheckpointException as exc:
        for failure in exc.failures.values():
            error = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(error, CheckpointError):
                raise CheckpointError(str(error)) from None
        raise


_PLANNER: type | None = None


def RestrictedLoadPlanner() -> Any:  # noqa: N802  (a class; built on first use: DCP's import is slow)
    """A DCP `DefaultLoadPlanner` whose non-tensor items (`BYTE_IO`: the optimizer's param-group
    values, step counts, ...) are read by segaccel's restricted reader instead of DCP's
    `torch.load(weights_only=False)`: an item asking to build or call anything beyond tensors,
    containers and plain values is refused (`CheckpointError`), nothing of it run. Tensors are read by
    DCP itself with `weights_only=True`."""
    global _PLANNER
    if _PLANNER is None:
        from torch.distributed.checkpoint import DefaultLoadPlanner
        from torch.distributed.checkpoint._nested_dict import set_element

        from segaccel.engine.checkpoint_files import read_checked_bytes

        class _RestrictedLoadPlanner(DefaultLoadPlanner):
            def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
                obj = read_checked_bytes(value, read_item.dest_index.fqn)
                if self.flatten_state_dict:
                    set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
                else:
                    self.state_dict[read_item.dest_index.fqn] = obj

        _PLANNER = _RestrictedLoadPlanner
    return _PLANNER()
