"""Precision and SyncBN: bf16 autocast on a CPU, fp16 on a CPU said out loud, SyncBN only on CUDA DDP."""

from types import SimpleNamespace

import torch
from torch import nn

from segaccel.config import load_config
from segaccel.engine.devices import adapt_sync_batchnorm
from segaccel.engine.runner import Runner

SHORT = ["train_cfg={type: IterBasedTrainLoop, max_iters: 1, val_interval: 100}", "val_dataloader=null"]


def run_recording_dtypes(config, work_dir, monkeypatch, mixed_precision):
    """Train one iteration; the dtypes of the classifier's outputs and of its weight, as seen in forward."""
    seen = []
    original = Runner.build_model

    def build_model(self, *args, **kwargs):
        model = original(self, *args, **kwargs)
        model.decode_head.conv_seg.register_forward_hook(
            lambda m, i, o: seen.append((o.dtype, m.weight.dtype))
        )
        return model

    monkeypatch.setattr(Runner, "build_model", build_model)
    runner = Runner(load_config(config, SHORT), work_dir=work_dir, mixed_precision=mixed_precision)
    runner.train()
    return runner, seen


def test_bf16_autocast_on_cpu(tiny_config, tmp_path, monkeypatch, fresh_accelerate):
    runner, seen = run_recording_dtypes(tiny_config, tmp_path / "run", monkeypatch, "bf16")
    assert runner.precision == "bf16"
    assert seen == [(torch.bfloat16, torch.float32)]  # bf16 compute, fp32 weights
    assert all(p.dtype == torch.float32 for p in runner.unwrapped_model.parameters())
    log = (tmp_path / "run" / "logs" / "train.log").read_text()
    assert "mixed precision     : bf16" in log


def test_fp16_on_cpu_warns_and_trains_in_fp32(tiny_config, tmp_path, monkeypatch, fresh_accelerate):
    runner, seen = run_recording_dtypes(tiny_config, tmp_path / "run", monkeypatch, "fp16")
    assert runner.accelerator.mixed_precision == "fp16" and runner.precision == "no"
    assert seen == [(torch.float32, torch.float32)]  # what the warning says happens
    log = (tmp_path / "run" / "logs" / "train.log").read_text()
    assert "mixed precision fp16 was requested, but Accelerate runs fp16 only on GPUs" in log
    assert "trains in full fp32 precision" in log and "--mixed_precision bf16" in log
    assert "mixed precision     : no (fp16 requested: not available on cpu)" in log


def model_with_sync_bn() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), nn.Sequential(nn.SyncBatchNorm(4)))
    model[1].running_mean.fill_(0.5)
    model[2][0].weight.data.fill_(2.0)
    return model


def test_sync_batchnorm_only_with_several_processes_on_cuda():
    def accelerator(processes, device):
        return SimpleNamespace(num_processes=processes, device=torch.device(device))

    for processes, device in [(1, "cpu"), (2, "cpu"), (1, "cuda")]:
        model = adapt_sync_batchnorm(model_with_sync_bn(), accelerator(processes, device))
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert [type(m) for m in norms] == [nn.BatchNorm2d, nn.BatchNorm2d], (processes, device)
        assert torch.equal(norms[0].running_mean, torch.full((4,), 0.5))  # same state
        assert torch.equal(norms[1].weight, torch.full((4,), 2.0))
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    converted = adapt_sync_batchnorm(plain, accelerator(2, "cuda"))
    assert isinstance(converted[1], nn.SyncBatchNorm)
    # and a plain-BN model on one CPU process stays as it is, running on the CPU
    model = adapt_sync_batchnorm(model_with_sync_bn(), accelerator(1, "cpu")).train()
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4, 6, 6)


def test_reverting_sync_batchnorm_keeps_frozen_norms_frozen():
    """A frozen backbone's norms (and `norm_cfg.requires_grad: false` ones) stay frozen and in eval
    mode through SyncBN and back; the parameters are the same objects, so an optimizer built before
    still holds them."""
    from segaccel.models.backbones.resnet import ResNetV1c

    net = ResNetV1c(depth=18, base_channels=4, stem_channels=8, frozen_stages=1).train()
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert {"layer1.0.bn1.weight", "stem.1.weight"} <= frozen and "layer2.0.bn1.weight" not in frozen

    def eval_bn(model):
        return {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and not m.training}

    eval_norms = eval_bn(net)
    assert "layer1.0.bn1" in eval_norms and "layer2.0.bn1" not in eval_norms
    params = dict(net.named_parameters())
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    back = adapt_sync_batchnorm(synced, SimpleNamespace(num_processes=2, device=torch.device("cpu")))
    norms = {n: m for n, m in back.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert norms and all(type(m) is nn.BatchNorm2d for m in norms.values())
    assert {n for n, p in back.named_parameters() if not p.requires_grad} == frozen
    assert all(p is params[n] for n, p in back.named_parameters())
    assert {n for n, m in norms.items() if not m.training} == eval_norms
    back.train()  # the backbone's own train() still keeps its frozen stages in eval mode
    assert eval_bn(back) == eval_norms
    # and an explicitly frozen norm (norm_cfg requires_grad: false) outside any frozen stage
    sync = nn.SyncBatchNorm(4)
    sync.weight.requires_grad_(False), sync.bias.requires_grad_(False)
    one_cpu = SimpleNamespace(num_processes=1, device=torch.device("cpu"))
    reverted = adapt_sync_batchnorm(nn.Sequential(sync), one_cpu)
    assert not reverted[0].weight.requires_grad and not reverted[0].bias.requires_grad
