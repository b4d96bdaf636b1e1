"""from_pretrained from a folder and from the Hugging Face cache offline; device/dtype; fine-tuning;
strict loading; `load_pretrained_weights` (what `load_from:` uses); pickles only with weights_only."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from hub_testing import cache_folder, cache_repo, tiny_segformer
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import load_file, save_file

from segaccel.inference import inference_model
from segaccel.models import Segmentor
from segaccel.models.weights import load_pretrained_weights

X = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))


def _logits(model: Segmentor, x: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        return model(x.to(next(model.parameters()).dtype))


def _image(h: int = 30, w: int = 44, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_local_folder_round_trip_segments_like_the_original(tmp_path):
    model = tiny_segformer()
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    loaded = Segmentor.from_pretrained(tmp_path / "m")
    assert torch.equal(_logits(loaded), _logits(model))
    # the inference settings travelled: the same segmentation of an image, with no config file
    a, b = inference_model(model, _image()), inference_model(loaded, _image())
    assert torch.equal(a.seg_logits.data, b.seg_logits.data) and a.img_shape == b.img_shape == (32, 47)
    assert loaded.id2label == {0: "sky", 1: "road", 2: "car"} and loaded.palette == model.palette


def test_offline_cache_round_trip_with_revisions(tmp_path, offline_cache):
    main, tagged = tiny_segformer(seed=0), tiny_segformer(seed=1)
    main.save_pretrained(tmp_path / "main")
    tagged.save_pretrained(tmp_path / "v1")
    commit_main = cache_folder(offline_cache, "org/tiny-segformer", tmp_path / "main")
    commit_v1 = cache_folder(offline_cache, "org/tiny-segformer", tmp_path / "v1", revision="v1")

    assert torch.equal(_logits(Segmentor.from_pretrained("org/tiny-segformer")), _logits(main))
    assert torch.equal(
        _logits(Segmentor.from_pretrained("org/tiny-segformer", revision="v1")), _logits(tagged)
    )
    by_commit = Segmentor.from_pretrained("org/tiny-segformer", revision=commit_v1, local_files_only=True)
    assert torch.equal(_logits(by_commit), _logits(tagged))
    assert commit_main != commit_v1

    # an explicit cache_dir is honoured too, and a repo the cache does not have fails offline
    other = tmp_path / "other-cache"
    cache_folder(other, "someone/else", tmp_path / "main")
    assert torch.equal(_logits(Segmentor.from_pretrained("someone/else", cache_dir=other)), _logits(main))
    with pytest.raises((LocalEntryNotFoundError, FileNotFoundError)):
        Segmentor.from_pretrained("org/not-cached")


def test_pytorch_model_bin_from_the_cache_when_there_is_no_safetensors(tmp_path, offline_cache):
    model = tiny_segformer()
    model.save_pretrained(tmp_path / "m")
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    cache_repo(
        offline_cache,
        "org/bin-only",
        {"config.json": tmp_path / "m" / "config.json", "pytorch_model.bin": tmp_path / "pytorch_model.bin"},
    )
    assert torch.equal(_logits(Segmentor.from_pretrained("org/bin-only")), _logits(model))


class _Payload:
    """Unpickling this would run code (it writes a file); weights_only=True must refuse it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    model = tiny_segformer()
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    marker = tmp_path / "pwned.txt"
    torch.save({**model.state_dict(), "extra": _Payload(str(marker))}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"refused to unpickle it.*weights_only=True"):
        Segmentor.from_pretrained(tmp_path)
    assert not marker.exists()


def test_device_and_dtype_options(tmp_path):
    model = tiny_segformer()
    model.save_pretrained(tmp_path)
    reference = _logits(model)
    as_double = Segmentor.from_pretrained(tmp_path, device="cpu", dtype=torch.float64)
    assert {p.dtype for p in as_double.parameters()} == {torch.float64}
    assert as_double.decode_head.fusion_conv.bn.num_batches_tracked.dtype == torch.int64  # ints stay ints
    assert torch.allclose(_logits(as_double).float(), reference, atol=1e-5)

    as_bf16 = Segmentor.from_pretrained(tmp_path, dtype="bf16")
    assert next(as_bf16.parameters()).dtype == torch.bfloat16
    sample = inference_model(as_bf16, _image())  # inputs follow the model's dtype
    fp32 = inference_model(model, _image())
    assert sample.pred_sem_seg.shape == (30, 44) and sample.seg_logits.data.dtype == torch.bfloat16
    assert (sample.pred_sem_seg.data == fp32.pred_sem_seg.data).float().mean() > 0.9
    with pytest.raises(ValueError, match="floating torch dtype"):
        Segmentor.from_pretrained(tmp_path, dtype="int8")


def test_fine_tuning_from_a_cached_repo_reinitialises_only_the_classifier(tmp_path, offline_cache, caplog):
    source = tiny_segformer()
    source.save_pretrained(tmp_path / "m")
    cache_folder(offline_cache, "org/pretrained", tmp_path / "m")
    names = {0: "background", 1: "building", 2: "tree", 3: "water", 4: "field"}
    with caplog.at_level(logging.WARNING, logger="segaccel.models"):
        model = Segmentor.from_pretrained("org/pretrained", id2label=names)
    assert model.num_classes == 5 and model.id2label == names and model.label2id["water"] == 3
    assert model.palette is None  # the saved colours were for the 3 old classes
    assert "re-initialised for the new class count" in caplog.text
    assert "decode_head.conv_seg.bias, decode_head.conv_seg.weight" in caplog.text
    own, loaded = source.state_dict(), model.state_dict()
    same = [k for k in own if not k.startswith("decode_head.conv_seg.")]
    assert all(torch.equal(own[k], loaded[k]) for k in same)
    assert loaded["decode_head.conv_seg.weight"].shape == (5, 8, 1, 1)

    by_count = Segmentor.from_pretrained("org/pretrained", num_classes=2)
    assert by_count.num_classes == 2 and by_count.id2label is None
    # the fine-tuned model saves and loads strictly like any other
    model.save_pretrained(tmp_path / "fine-tuned")
    assert torch.equal(_logits(Segmentor.from_pretrained(tmp_path / "fine-tuned")), _logits(model))


def test_strict_loading_names_missing_unexpected_and_mis_shaped_keys(tmp_path, offline_cache):
    tiny_segformer().save_pretrained(tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    del weights["backbone.layers.1.1.0.attn.attn.in_proj_weight"]
    weights["decode_head.extra.weight"] = torch.zeros(1)
    save_file(weights, tmp_path / "m" / "model.safetensors")
    cache_folder(offline_cache, "org/broken", tmp_path / "m")
    with pytest.raises(RuntimeError) as info:
        Segmentor.from_pretrained("org/broken")
    message = str(info.value)
    assert (
        "missing keys (in the model, not in the weights): backbone.layers.1.1.0.attn.attn.in_proj_weight"
        in message
    )
    assert "unexpected keys (in the weights, not in the model): decode_head.extra.weight" in message

    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["decode_head"]["channels"] = 16  # the architecture no longer matches the weights
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        RuntimeError, match=r"decode_head.fusion_conv.conv.weight: weights \(8, 32, 1, 1\) vs model"
    ):
        Segmentor.from_pretrained(tmp_path / "m", strict=False)


def test_load_pretrained_weights_from_a_file_a_folder_and_a_repo(tmp_path, offline_cache, caplog):
    """`load_from:` — matching weights loaded, the other class count's classifier re-initialised."""
    source = tiny_segformer(seed=3)
    source.save_pretrained(tmp_path / "m")
    cache_folder(offline_cache, "org/source", tmp_path / "m")
    torch.save({"meta": {"iter": 10}, "state_dict": source.state_dict()}, tmp_path / "mmseg_style.pth")
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("decode_head.conv_seg.")}

    for where in (
        tmp_path / "m" / "model.safetensors",
        tmp_path / "m",
        "org/source",
        tmp_path / "mmseg_style.pth",
    ):
        target = Segmentor(
            **{
                **tiny_segformer().config_for_saving(),
                "id2label": None,
                "palette": None,
                "decode_head": {**source.config["decode_head"], "num_classes": 6},
            }
        )
        with caplog.at_level(logging.WARNING, logger="segaccel.models"):
            used = load_pretrained_weights(target, where)
        state = target.state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items()), where
        assert "decode_head.conv_seg.weight" in caplog.text and str(used).endswith(
            ("model.safetensors", "mmseg_style.pth")
        )
        caplog.clear()
    with pytest.raises(RuntimeError, match="shape mismatches"):
        load_pretrained_weights(target, tmp_path / "m", strict=True)
    with pytest.raises(FileNotFoundError, match="no weights file or model folder"):
        load_pretrained_weights(target, tmp_path / "nowhere" / "model.safetensors")
