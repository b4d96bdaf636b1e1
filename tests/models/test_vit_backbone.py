"""ViTs through TimmBackbone: the same maps as timm's own `forward_intermediates` at a size the patch
does not divide, weights from an offline Hub cache, freezing and activation checkpointing.
Shallow/narrow variants (timm kwargs) with random init: nothing is downloaded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip("timm")

from safetensors.torch import save_file  # noqa: E402

from segaccel.models import TimmBackbone  # noqa: E402

H, W = 97, 131  # divisible by neither 14 nor 16
SMALL = {
    "vit_small_patch14_reg4_dinov2": dict(depth=3),  # 1 class + 4 register tokens
    "vit_small_patch16_dinov3": dict(depth=3),  # EVA blocks with RoPE, 1 class + 4 storage tokens
    "vit_base_patch16_224": dict(depth=3, embed_dim=192, num_heads=3),  # plain ViT, 1 class token
}
OTHER_FAMILIES = {  # the rest of the ViT family the backbone takes: the same parity check
    "vit_small_patch14_dinov2": dict(depth=3),  # DINOv2 without registers
    "vit_small_patch16_dinov3_qkvb": dict(depth=3),  # DINOv3 with qkv bias (and EUPE's weights)
    "deit3_small_patch16_224": dict(depth=3),  # DeiT III
    "eva02_small_patch14_224": dict(depth=3),  # EVA-02: SwiGLU, RoPE
}
KWARGS = {**SMALL, **OTHER_FAMILIES}


def timms_own(name: str, ours: TimmBackbone) -> torch.nn.Module:
    """timm's model with the same weights, padding inputs itself (`dynamic_img_pad`)."""
    kwargs = dict(dynamic_img_size=True, dynamic_img_pad=True, **KWARGS[name])
    ref = timm.create_model(name, pretrained=False, **kwargs)
    missing, unexpected = ref.load_state_dict(ours.timm_model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("head", "norm", "fc_norm")) for k in missing)
    return ref.eval()


@pytest.mark.parametrize("name", list(KWARGS))
def test_maps_equal_timms_forward_intermediates_at_a_size_the_patch_does_not_divide(name):
    torch.manual_seed(0)
    ours = TimmBackbone(name, out_indices=[0, -1], model_kwargs=KWARGS[name]).eval()
    ref = timms_own(name, ours)
    p = ours.patch_size[0]
    assert ours.out_indices == [0, 2] and ours.reductions == (p, p)
    assert ours.out_channels == (ours.embed_dim,) * 2
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        mine = ours(x)
        theirs = ref.forward_intermediates(x, indices=[0, 2], output_fmt="NCHW", intermediates_only=True)
    grid = (-(-H // p), -(-W // p))  # (7, 10) for patch 14, (7, 9) for 16
    for a, b in zip(mine, theirs):
        assert a.shape == (2, ours.embed_dim, *grid)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(SMALL))
def test_class_token_concatenated_after_the_final_norm(name):
    torch.manual_seed(1)
    ours = TimmBackbone(
        name, out_indices=[1, 2], with_cls_token=True, final_norm=True, model_kwargs=SMALL[name]
    ).eval()
    ref = timms_own(name, ours)
    ref.norm.load_state_dict(ours.timm_model.norm.state_dict())
    c = ours.embed_dim
    assert ours.out_channels == (2 * c, 2 * c)
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        mine = ours(x)
        theirs = ref.forward_intermediates(
            x, indices=[1, 2], norm=True, return_prefix_tokens=True, intermediates_only=True
        )
    for a, (patches, prefix) in zip(mine, theirs):
        assert prefix.shape[1] == ours.num_prefix_tokens == (5 if "reg4" in name or "dinov3" in name else 1)
        torch.testing.assert_close(a[:, :c], patches, rtol=0, atol=0)
        cls = prefix[:, 0]  # the class token; register/storage tokens are dropped
        assert torch.equal(a[:, c:], cls[:, :, None, None].expand_as(patches))


def test_center_padding_is_dinov2s_evaluation_padding():
    torch.manual_seed(2)
    name = "vit_small_patch14_reg4_dinov2"
    ours = TimmBackbone(name, out_indices=[2], patch_padding="center", model_kwargs=SMALL[name]).eval()
    ref = timms_own(name, ours)
    x = torch.randn(1, 3, H, W)
    padded = F.pad(x, (4, 5, 0, 1))  # 131 -> 140: 4 left, 5 right; 97 -> 98: 0 top, 1 bottom
    with torch.no_grad():
        (mine,) = ours(x)
        (theirs,) = ref.forward_intermediates(padded, indices=[2], intermediates_only=True)
    torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def _fake_hub_repo(cache, repo_id: str, weights: dict[str, torch.Tensor]) -> None:
    """A Hugging Face cache entry as `hf_hub_download` leaves it: snapshots/<sha>/model.safetensors."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "snapshots" / sha).mkdir(parents=True)
    weights = {k: v.contiguous() for k, v in weights.items()}
    save_file(weights, str(repo / "snapshots" / sha / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)


@pytest.mark.parametrize(
    ("name", "repo_id", "license"),
    [
        ("vit_small_patch14_reg4_dinov2", "timm/vit_small_patch14_reg4_dinov2.lvd142m", "apache-2.0"),
        ("vit_small_patch16_dinov3", "timm/vit_small_patch16_dinov3.lvd1689m", "dinov3-license"),
    ],
)
def test_weights_from_an_offline_hub_cache_with_their_licence(offline_cache, name, repo_id, license):
    torch.manual_seed(3)
    source = timm.create_model(name, pretrained=False, **SMALL[name])
    _fake_hub_repo(offline_cache, repo_id, source.state_dict())
    for pretrained in (repo_id, True):  # a Hub id, and the model's default weights (the same repo)
        ours = TimmBackbone(name, pretrained=pretrained, out_indices=[-1], model_kwargs=SMALL[name])
        assert torch.equal(ours.timm_model.blocks[2].mlp.fc2.weight, source.blocks[2].mlp.fc2.weight)
        assert torch.equal(ours.timm_model.patch_embed.proj.weight, source.patch_embed.proj.weight)
        assert ours.weights_license == license
    assert TimmBackbone(name, out_indices=[-1], model_kwargs=SMALL[name]).weights_license is None
    kept = TimmBackbone(name, out_indices=[-1], model_kwargs=SMALL[name], weights_license=license)
    assert kept.weights_license == license  # a saved model's config keeps it


def test_unused_blocks_head_and_final_norm_are_pruned():
    net = TimmBackbone("vit_base_patch16_224", out_indices=[1], model_kwargs=SMALL["vit_base_patch16_224"])
    names = {n for n, _ in net.named_parameters()}
    pruned = ("timm_model.blocks.2.", "timm_model.head.", "timm_model.norm.")
    assert not any(n.startswith(pruned) for n in names)
    normed = TimmBackbone(
        "vit_base_patch16_224", out_indices=[1], final_norm=True, model_kwargs=SMALL["vit_base_patch16_224"]
    )
    assert "timm_model.norm.weight" in {n for n, _ in normed.named_parameters()}


def test_frozen_backbone_has_no_gradients_and_stays_in_eval_mode():
    name = "vit_small_patch16_dinov3"
    net = TimmBackbone(name, out_indices=[-1], frozen=True, drop_path_rate=0.5, model_kwargs=SMALL[name])
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert net.training and not any(m.training for m in net.timm_model.modules())
    x = torch.randn(1, 3, 64, 80)
    (a,) = net(x)
    (b,) = net(x)
    assert torch.equal(a, b) and not a.requires_grad  # no drop path, no RoPE jitter, no graph


def test_frozen_stages_vit_stem_and_first_blocks():
    name = "vit_small_patch14_reg4_dinov2"
    net = TimmBackbone(name, out_indices=[-1], frozen_stages=2, model_kwargs=SMALL[name]).train()
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert {"timm_model.cls_token", "timm_model.reg_token", "timm_model.pos_embed"} <= frozen
    assert "timm_model.patch_embed.proj.weight" in frozen
    assert any(n.startswith("timm_model.blocks.1.") for n in frozen)
    assert not any(n.startswith("timm_model.blocks.2.") for n in frozen)
    assert not net.timm_model.blocks[1].training and net.timm_model.blocks[2].training
    stem_only = TimmBackbone(name, out_indices=[-1], frozen_stages=0, model_kwargs=SMALL[name])
    assert {n for n, p in stem_only.named_parameters() if not p.requires_grad} == {
        "timm_model.cls_token",
        "timm_model.reg_token",
        "timm_model.pos_embed",
        "timm_model.patch_embed.proj.weight",
        "timm_model.patch_embed.proj.bias",
    }


def test_frozen_stages_resnet_is_mmsegmentations_stem_plus_layers():
    net = TimmBackbone("resnet18", out_indices=(1, 2, 3, 4), frozen_stages=1).train()
    frozen = {n.split(".")[1] for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1"}
    assert not net.timm_model.bn1.training and not net.timm_model.layer1[0].bn1.training
    assert net.timm_model.layer2[0].bn1.training


def test_with_cp_gives_the_same_gradients():
    name = "vit_small_patch16_dinov3"
    torch.manual_seed(4)
    plain = TimmBackbone(name, out_indices=[0, 2], drop_path_rate=0.2, model_kwargs=SMALL[name])
    ckpt = TimmBackbone(name, out_indices=[0, 2], drop_path_rate=0.2, with_cp=True, model_kwargs=SMALL[name])
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.timm_model.grad_checkpointing and not plain.timm_model.grad_checkpointing
    x = torch.randn(2, 3, H, W)
    grads = []
    for net in (plain, ckpt):
        net.train()
        torch.manual_seed(5)  # the same drop-path and RoPE-jitter draws; checkpointing replays them
        loss = sum((f * f).mean() for f in net(x))
        loss.backward()
        grads.append({n: p.grad for n, p in net.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=0, atol=1e-6, msg=n)


def test_clear_errors():
    one = {"depth": 1}
    with pytest.raises(ValueError, match="block indices in"):
        TimmBackbone("vit_base_patch16_224", out_indices=[3], model_kwargs={"depth": 3})
    with pytest.raises(ValueError, match="for ViT-family models"):
        TimmBackbone("resnet18", with_cls_token=True)
    with pytest.raises(ValueError, match="no class token"):
        TimmBackbone("vit_base_patch16_siglip_224", out_indices=[0], with_cls_token=True, model_kwargs=one)
    with pytest.raises(ValueError, match="patch_padding"):
        TimmBackbone("vit_base_patch16_224", out_indices=[0], patch_padding="left", model_kwargs=one)
