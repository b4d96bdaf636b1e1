"""A payload pickle in a model folder, a weights file or a Hub repo: every door refuses it, nothing runs.

The doors: `Segmentor.from_pretrained` (a folder, a file, a Hub id from the offline cache, a
transformers SegFormer folder), `load_from:` (the Runner), `--checkpoint` (scripts/test.py), the
converters (scripts/convert_checkpoint.py, `segaccel.convert.load_mmseg_checkpoint`). The payload
(`os.system("touch MARKER")`) sits in `pytorch_model.bin`, in a `.pth`, under `model.safetensors`'s
name, or inside an MMSegmentation checkpoint (its weights, or its `meta`, which is read but never
run). The marker must never appear.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from security_helpers import Payload, tiny_segformer, tiny_training_config, write_payload

from segaccel.config import load_config
from segaccel.convert import load_mmseg_checkpoint
from segaccel.models import Segmentor

REFUSED = r"refused to unpickle it: .* holds a pickled (posix|nt)\.system object"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "model"
    tiny_segformer().save_pretrained(folder)
    return folder


def model_folder(saved, tmp_path, weights: str, marker, form="torch"):
    """A copy of the saved folder whose only weights are a payload named `weights`."""
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    (folder / "model.safetensors").unlink()
    write_payload(folder / weights, marker, form)
    return folder


@pytest.mark.parametrize("form", ["torch", "pickle"])
def test_from_pretrained_refuses_a_payload_in_pytorch_model_bin(form, saved, tmp_path):
    marker = tmp_path / "MARKER"
    folder = model_folder(saved, tmp_path, "pytorch_model.bin", marker, form)
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: (refused|not a torch checkpoint|expected)"):
        Segmentor.from_pretrained(folder)
    assert not marker.exists()


def test_from_pretrained_never_unpickles_a_model_safetensors(saved, tmp_path):
    marker = tmp_path / "MARKER"
    folder = model_folder(saved, tmp_path, "model.safetensors", marker)
    with pytest.raises(ValueError, match=r"model\.safetensors: not a valid safetensors file"):
        Segmentor.from_pretrained(folder)
    assert not marker.exists()


def test_from_pretrained_of_a_weights_file(saved, tmp_path):
    marker = tmp_path / "MARKER"
    folder = model_folder(saved, tmp_path, "iter_80.pth", marker)
    with pytest.raises(ValueError, match=REFUSED):
        Segmentor.from_pretrained(folder / "iter_80.pth")
    assert not marker.exists()


def test_from_pretrained_of_a_hub_id(saved, tmp_path, offline_cache):
    from hub_testing import cache_folder

    marker = tmp_path / "MARKER"
    folder = model_folder(saved, tmp_path, "pytorch_model.bin", marker)
    cache_folder(offline_cache, "attacker/tiny-seg", folder)
    with pytest.raises(ValueError, match=REFUSED):
        Segmentor.from_pretrained("attacker/tiny-seg")
    assert not marker.exists()


def test_from_pretrained_of_a_transformers_folder(tmp_path):
    import transformers

    config = transformers.SegformerConfig(
        num_encoder_blocks=4,
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 8, 8, 8],
        num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=8,
        num_labels=3,
    )
    folder = tmp_path / "tf"
    config.save_pretrained(folder)
    marker = tmp_path / "MARKER"
    write_payload(folder / "pytorch_model.bin", marker)
    with pytest.raises(ValueError, match=REFUSED):
        Segmentor.from_pretrained(folder)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["file", "folder"])
def test_load_from(where, saved, tmp_path, fresh_accelerate):
    from segaccel.engine.runner import Runner

    marker = tmp_path / "MARKER"
    folder = model_folder(saved, tmp_path, "pytorch_model.bin", marker)
    source = folder / "pytorch_model.bin" if where == "file" else folder
    cfg = load_config(tiny_training_config(tmp_path, load_from=str(source)))
    with pytest.raises(ValueError, match=REFUSED):
        Runner(cfg, work_dir=tmp_path / "run").build_model()
    assert not marker.exists()


def test_the_checkpoint_option_of_the_test_script(saved, tmp_path, fresh_accelerate, script_module):
    marker = tmp_path / "MARKER"
    folder = model_folder(saved, tmp_path, "iter_80.pth", marker)
    config = tiny_training_config(tmp_path)
    args = [str(config), "--checkpoint", str(folder / "iter_80.pth"), "--work-dir", str(tmp_path / "w")]
    with pytest.raises(ValueError, match=REFUSED):
        script_module("test").main(args)
    assert not marker.exists()


def test_the_checkpoint_converter_script(tmp_path, script_module):
    marker = tmp_path / "MARKER"
    checkpoint = tmp_path / "segformer_tiny.pth"
    state = {f"module.{k}": v for k, v in tiny_segformer().state_dict().items()}
    state["module.decode_head.conv_seg.weight"] = Payload(marker)
    torch.save({"meta": {"CLASSES": ("sky", "road", "car")}, "state_dict": state}, checkpoint)
    config = tiny_training_config(tmp_path)
    args = [str(checkpoint), str(tmp_path / "out"), "--config", str(config)]
    with pytest.raises(ValueError, match=r"segformer_tiny\.pth: .*(refused|no `state_dict` of tensors)"):
        script_module("convert_checkpoint").main(args)
    assert not marker.exists() and not (tmp_path / "out" / "model.safetensors").exists()


def test_a_payload_in_an_mmseg_checkpoints_meta_is_read_as_inert_data(tmp_path):
    """MMSegmentation files carry non-tensor objects (mmengine's message hub): read, never run."""
    marker = tmp_path / "MARKER"
    checkpoint = tmp_path / "iter_80.pth"
    model = tiny_segformer()
    meta = {"CLASSES": ("sky", "road", "car"), "hook": Payload(marker)}
    torch.save({"meta": meta, "state_dict": model.state_dict(), "message_hub": Payload(marker)}, checkpoint)
    ckpt = load_mmseg_checkpoint(checkpoint)
    assert not marker.exists()
    assert ckpt["classes"] == ["sky", "road", "car"] or tuple(ckpt["classes"]) == ("sky", "road", "car")
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in model.state_dict().items())
