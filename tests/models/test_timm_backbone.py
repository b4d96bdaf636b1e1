"""TimmBackbone: the same features as timm's own `features_only` model; pretrained weights from a file
and from the (offline) Hub cache; a whole segmentor on top. Skipped where timm is not installed."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

from safetensors.torch import save_file  # noqa: E402

from segaccel.models import Segmentor, TimmBackbone  # noqa: E402


def reference(name: str, **kwargs) -> torch.nn.Module:
    return timm.create_model(name, features_only=True, pretrained=False, **kwargs).eval()


@pytest.mark.parametrize(
    ("name", "kwargs", "channels", "reductions"),
    [
        ("resnet50c", dict(out_indices=(1, 2, 3, 4), output_stride=8), (256, 512, 1024, 2048), (4, 8, 8, 8)),
        (
            "resnet50c",
            dict(out_indices=(1, 2, 3, 4), output_stride=16),
            (256, 512, 1024, 2048),
            (4, 8, 16, 16),
        ),
        ("convnext_atto", dict(out_indices=(0, 1, 2, 3)), (40, 80, 160, 320), (4, 8, 16, 32)),
    ],
)
def test_features_equal_timms_own_features_only_model(name, kwargs, channels, reductions):
    torch.manual_seed(0)
    ours = TimmBackbone(name, **kwargs).eval()
    theirs = reference(name, **kwargs)
    theirs.load_state_dict(ours.timm_model.state_dict())
    assert ours.out_channels == channels and ours.reductions == reductions
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        mine, ref = ours(x), theirs(x)
    assert len(mine) == len(ref) == 4
    for a, b, c, r in zip(mine, ref, channels, reductions):
        assert a.shape == (1, c, 64 // r, 96 // r)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resnet_v1c_layout_deep_stem_and_contracted_dilation():
    """resnet50c is MMSegmentation's ResNetV1c: 3-conv stem (32, 32, 64), plain 1x1 shortcut, d8 dilations."""
    net = TimmBackbone("resnet50c", out_indices=(1, 2, 3, 4), output_stride=8).timm_model
    stem = [m for m in net.conv1 if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.stride) for m in stem] == [
        (3, 32, (2, 2)),
        (32, 32, (1, 1)),
        (32, 64, (1, 1)),
    ]
    assert isinstance(net.layer3[0].downsample[0], torch.nn.Conv2d)  # no average-pool shortcut
    assert net.layer3[0].conv2.dilation == (1, 1) and net.layer3[1].conv2.dilation == (2, 2)
    assert net.layer4[0].conv2.dilation == (2, 2) and net.layer4[1].conv2.dilation == (4, 4)


def test_swin_gives_channels_first_maps_at_other_sizes():
    ours = TimmBackbone(
        "swin_tiny_patch4_window7_224",
        out_indices=(0, 1, 2, 3),
        model_kwargs={"strict_img_size": False, "depths": (1, 1, 1, 1)},
    ).eval()
    with torch.no_grad():
        feats = ours(torch.randn(1, 3, 96, 128))
    assert [tuple(f.shape) for f in feats] == [
        (1, 96, 24, 32),
        (1, 192, 12, 16),
        (1, 384, 6, 8),
        (1, 768, 3, 4),
    ]


def test_pretrained_from_a_file_and_from_the_hub_cache(tmp_path, monkeypatch):
    torch.manual_seed(1)
    source = timm.create_model("resnet18", pretrained=False)
    weights = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(weights, str(tmp_path / "resnet18.safetensors"))
    from_file = TimmBackbone("resnet18", pretrained=str(tmp_path / "resnet18.safetensors"))
    torch.testing.assert_close(from_file.timm_model.conv1.weight, weights["conv1.weight"])

    # a hand-built Hugging Face cache, read offline: what `pretrained: timm/<repo>` downloads
    import huggingface_hub.constants as hf_constants

    snapshot = tmp_path / "hub" / "models--timm--resnet18.test" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(weights, str(snapshot / "model.safetensors"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    from_hub = TimmBackbone("resnet18", pretrained="timm/resnet18.test")
    torch.testing.assert_close(from_hub.timm_model.layer4[1].conv2.weight, weights["layer4.1.conv2.weight"])


def test_segmentor_on_a_timm_backbone_drops_pretrained_when_saved(tmp_path):
    torch.manual_seed(0)
    model = Segmentor(
        backbone=dict(type="TimmBackbone", model_name="resnet18", out_indices=[1, 2, 3, 4], output_stride=8),
        decode_head=dict(
            type="PSPHead",
            in_channels=512,
            in_index=3,
            channels=16,
            num_classes=3,
            norm_cfg={"type": "BN", "requires_grad": True},
            pool_scales=[1, 2],
        ),
        auxiliary_head=dict(
            type="FCNHead",
            in_channels=256,
            in_index=2,
            channels=8,
            num_convs=1,
            concat_input=False,
            num_classes=3,
            norm_cfg={"type": "BN", "requires_grad": True},
        ),
    )
    assert model.config["backbone"]["model_name"] == "resnet18"
    out = model.eval().predict(torch.randn(1, 3, 64, 80))[0]
    assert out.seg_logits.data.shape == (3, 64, 80)
    assert model.config_for_saving()["backbone"]["pretrained"] is None
