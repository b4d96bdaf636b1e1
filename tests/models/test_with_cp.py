"""`with_cp: true` (activation checkpointing) gives the gradients of the plain backbone, per family.

Each pair is built with the same weights; both run the same input with the same RNG seed (drop
path active where the family has it: checkpointing replays the RNG state in the recomputation),
and every parameter's gradient must agree to 1e-6. The checkpointed blocks are counted, so a
`with_cp` that is accepted but does nothing fails.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.utils.checkpoint
from torch import nn

from segaccel.models.backbones.convnext import ConvNeXt
from segaccel.models.backbones.mit import MixVisionTransformer
from segaccel.models.backbones.resnet import ResNetV1c
from segaccel.models.backbones.swin import SwinTransformer

FAMILIES: dict[str, Callable[..., nn.Module]] = {
    "mit": lambda **kw: MixVisionTransformer(
        embed_dims=8, num_layers=(2, 1, 1, 1), num_heads=(1, 2, 5, 8), drop_path_rate=0.3, **kw
    ),
    "swin": lambda **kw: SwinTransformer(
        embed_dims=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7, drop_path_rate=0.3, **kw
    ),
    "convnext": lambda **kw: ConvNeXt(
        arch={"depths": [1, 1, 2, 1], "channels": [8, 16, 32, 64]},
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.3,
        **kw,
    ),
    "resnet": lambda **kw: ResNetV1c(depth=50, base_channels=4, stem_channels=8, **kw),
}
BLOCKS = {"mit": 5, "swin": 8, "convnext": 5, "resnet": 16}  # blocks each model above has


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_with_cp_gives_the_same_gradients(family, checkpoint_calls):
    torch.manual_seed(0)
    plain = FAMILIES[family]()
    for m in plain.modules():  # ResNet's last norm of each block starts at zero: every branch would be 0
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    ckpt = FAMILIES[family](with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    calls = checkpoint_calls
    x = torch.randn(2, 3, 61, 83)
    grads, outs = [], []
    for net in (plain, ckpt):
        net.train()
        torch.manual_seed(5)  # the same drop-path draws
        feats = net(x)
        loss = sum((f * f).mean() + f.mean() for f in feats)
        loss.backward()
        outs.append([f.detach() for f in feats])
        grads.append({n: p.grad for n, p in net.named_parameters() if p.requires_grad})
    assert len(calls) == BLOCKS[family]  # every block of the checkpointed model, none of the plain one
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    # the recomputation leaves BN's running statistics as one forward leaves them (ResNet)
    buffers = [dict(net.named_buffers()) for net in (plain, ckpt)]
    for n, buf in buffers[0].items():
        torch.testing.assert_close(buffers[1][n], buf, rtol=0, atol=1e-6, msg=n)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for n, g in grads[0].items():
        assert g is not None and g.abs().sum() > 0, n
        torch.testing.assert_close(grads[1][n], g, rtol=0, atol=1e-6, msg=n)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_with_cp_is_off_in_inference(family, checkpoint_calls):
    """Under no_grad the blocks run plainly (nothing to recompute), with the plain model's outputs."""
    torch.manual_seed(0)
    plain = FAMILIES[family]().eval()
    ckpt = FAMILIES[family](with_cp=True).eval()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        for a, b in zip(plain(x), ckpt(x)):
            assert torch.equal(a, b)
    assert checkpoint_calls == []
