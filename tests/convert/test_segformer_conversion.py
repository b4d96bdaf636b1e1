"""transformers SegFormer ↔ segaccel: state dicts and configs, and the same logits (fp32, atol 1e-5).

transformers is a test-only dependency; the models are tiny, random and built here (no download).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from segaccel.convert import (
    mit_config_from_transformers,
    mit_state_dict_from_transformers,
    segformer_config_from_transformers,
    segformer_config_to_transformers,
    segformer_state_dict_from_transformers,
    segformer_state_dict_to_transformers,
)
from segaccel.models import Segmentor
from segaccel.registry import MODELS

transformers = pytest.importorskip("transformers")

ID2LABEL = {0: "wall", 1: "floor", 2: "ceiling", 3: "bed", 4: "window"}


def tiny_config(**overrides):
    kwargs = dict(
        num_channels=3,
        num_encoder_blocks=4,
        depths=[1, 2, 1, 1],
        sr_ratios=[4, 2, 2, 1],
        hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 2, 3, 4],
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 2],
        mlp_ratios=[2, 2, 2, 2],
        decoder_hidden_size=16,
        id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()},
        classifier_dropout_prob=0.0,
        drop_path_rate=0.0,
    )
    kwargs.update(overrides)
    return transformers.SegformerConfig(**kwargs)


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter and BN statistic moved off its init, so no tensor can be mapped wrongly unseen."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
            else:
                tensor.add_(0.2 * torch.randn(tensor.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def tf_model():
    torch.manual_seed(0)
    return randomised(transformers.SegformerForSemanticSegmentation(tiny_config()))


@pytest.fixture(scope="module")
def saved_state(tf_model, tmp_path_factory):
    """The state dict as transformers saves it (its checkpoint names, as on the Hub)."""
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("tf")
    tf_model.save_pretrained(folder)
    return load_file(folder / "model.safetensors")


def ours_from(tf_model, state) -> Segmentor:
    model = Segmentor(**segformer_config_from_transformers(tf_model.config.to_dict()))
    model.load_weights(segformer_state_dict_from_transformers(state), strict=True)
    return model.eval()


def test_converted_model_gives_transformers_logits(tf_model, saved_state):
    ours = ours_from(tf_model, saved_state)
    x = torch.randn(2, 3, 72, 100, generator=torch.Generator().manual_seed(1))  # non-square, not /32
    with torch.no_grad():
        expected = tf_model(pixel_values=x).logits
        got = ours(x)
    assert got.shape == expected.shape == (2, 5, 18, 25)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert ours.backbone.layer_norm_eps == 1e-5 and ours.decode_head.projection == "linear"


def test_state_dicts_round_trip_exactly_in_both_directions(tf_model, saved_state):
    ours = segformer_state_dict_from_transformers(saved_state)
    # transformers 5's in-memory names convert to the same tensors
    from_memory = segformer_state_dict_from_transformers(tf_model.state_dict())
    assert sorted(from_memory) == sorted(ours) and all(torch.equal(from_memory[k], ours[k]) for k in ours)
    back = segformer_state_dict_to_transformers(ours)
    assert sorted(back) == sorted(saved_state)
    assert all(torch.equal(back[k], saved_state[k]) for k in saved_state)
    # q, k, v stacked in that order; the Mix-FFN's Linear weights became 1x1 convs
    q = saved_state["segformer.encoder.block.1.1.attention.self.query.weight"]
    v = saved_state["segformer.encoder.block.1.1.attention.self.value.bias"]
    assert torch.equal(ours["backbone.layers.1.1.1.attn.attn.in_proj_weight"][:16], q)
    assert torch.equal(ours["backbone.layers.1.1.1.attn.attn.in_proj_bias"][32:], v)
    assert ours["backbone.layers.0.1.0.ffn.layers.0.weight"].shape == (16, 8, 1, 1)
    assert torch.equal(ours["decode_head.conv_seg.weight"], saved_state["decode_head.classifier.weight"])


def test_configs_convert_both_ways(tf_model, tmp_path):
    ours = segformer_config_from_transformers(tf_model.config.to_dict())
    assert ours["backbone"]["embed_dims"] == 8 and ours["backbone"]["num_layers"] == [1, 2, 1, 1]
    assert ours["id2label"] == {str(k): v for k, v in ID2LABEL.items()}
    back = segformer_config_to_transformers(ours)
    original = json.loads(tf_model.config.to_json_string())  # as in its config.json
    for key in (
        "depths",
        "sr_ratios",
        "hidden_sizes",
        "num_attention_heads",
        "mlp_ratios",
        "decoder_hidden_size",
        "patch_sizes",
        "strides",
        "id2label",
    ):
        assert back[key] == original[key], key
    # a model built from our config, written in transformers' layout, loads there with the same logits
    ours_model = randomised(Segmentor(**ours), seed=5)
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(back))
    save_file(segformer_state_dict_to_transformers(ours_model.state_dict()), folder / "model.safetensors")
    twin, info = transformers.SegformerForSemanticSegmentation.from_pretrained(
        folder, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    x = torch.randn(1, 3, 64, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(twin.eval()(pixel_values=x).logits, ours_model(x), rtol=0, atol=1e-5)


def test_preprocessor_config_gives_normalisation_and_test_resize(tf_model):
    pre = {
        "do_resize": True,
        "size": {"height": 512, "width": 640},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.25] * 3,
    }
    cfg = segformer_config_from_transformers(tf_model.config.to_dict(), pre)
    assert cfg["data_preprocessor"]["mean"] == [127.5] * 3 and cfg["data_preprocessor"]["std"] == [63.75] * 3
    assert cfg["test_pipeline"] == [{"type": "Resize", "scale": [640, 512], "keep_ratio": False}]
    defaults = segformer_config_from_transformers(tf_model.config.to_dict())  # SegformerImageProcessor's
    assert defaults["data_preprocessor"]["mean"] == [123.675, 116.28, 103.53]
    assert defaults["data_preprocessor"]["std"] == [58.395, 57.12, 57.375]


def test_encoder_weights_of_the_imagenet_repos_initialise_our_mit():
    torch.manual_seed(1)
    encoder_repo = randomised(
        transformers.SegformerForImageClassification(tiny_config(num_labels=10)), seed=3
    )
    backbone = MODELS.build(mit_config_from_transformers(encoder_repo.config.to_dict()))
    backbone.load_state_dict(mit_state_dict_from_transformers(encoder_repo.state_dict()), strict=True)
    backbone.eval()
    x = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        theirs = encoder_repo.segformer(x, output_hidden_states=True).hidden_states
        ours = backbone(x)
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_clear_errors_for_what_does_not_convert(tf_model, saved_state):
    with pytest.raises(ValueError, match=r"hidden_sizes \[8, 20, 24, 32\] are not one head width"):
        mit_config_from_transformers({**tf_model.config.to_dict(), "hidden_sizes": [8, 20, 24, 32]})
    with pytest.raises(ValueError, match="unknown keys: classifier.weight"):
        segformer_state_dict_from_transformers({**saved_state, "classifier.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="no transformers SegFormer encoder weights"):
        mit_state_dict_from_transformers({"backbone.conv.weight": torch.zeros(1)})
    conv_head = Segmentor(
        **{
            **segformer_config_from_transformers(tf_model.config.to_dict()),
            "decode_head": {
                **segformer_config_from_transformers(tf_model.config.to_dict())["decode_head"],
                "projection": "conv",
            },
        }
    )
    with pytest.raises(ValueError, match="no transformers SegFormer counterpart: decode_head.convs"):
        segformer_state_dict_to_transformers(conv_head.state_dict())
