"""One weight door: the same weights reach a model through `load_from:` (the Runner), `--checkpoint`
(scripts/test.py) and `Segmentor.from_pretrained`, from every source each of them accepts.

The sources hold one tiny SegFormer's weights (random, with non-trivial BN statistics):

- `model.safetensors` in a saved model folder;
- `pytorch_model.bin` (a plain torch pickle), alone in a folder with its config.json;
- an MMSegmentation-style `.pth`: the weights under `state_dict` with DistributedDataParallel's
  `module.` prefix, beside a `meta` dict;
- the folder that holds only `pytorch_model.bin`;
- Hub ids in an offline Hugging Face cache: `org/tiny-seg` (model.safetensors) and
  `org/tiny-seg-bin@v1` (only pytorch_model.bin, at a tag).

Every door must load every source to exactly the source's tensors.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from segaccel.config import dump_config, load_config
from segaccel.models import Segmentor
from segaccel.models.checkpoint_formats import (
    MMSEGMENTATION,
    SEGACCEL,
    TRANSFORMERS_SEGFORMER,
    format_of,
    format_of_config,
)
from segaccel.models.weights import load_pretrained_weights, resolve_weights_file, weights_source

ROOT = Path(__file__).resolve().parents[2]
MODEL_CFG = {
    "backbone": {
        "type": "MixVisionTransformer",
        "embed_dims": 8,
        "num_layers": [1, 1, 1, 1],
        "num_heads": [1, 1, 1, 1],
        "sr_ratios": [2, 2, 1, 1],
        "drop_path_rate": 0.0,
    },
    "decode_head": {"type": "SegformerHead", "in_channels": [8, 8, 8, 8], "channels": 8, "num_classes": 4},
    "data_preprocessor": {"size_divisor": 32},
    "id2label": {0: "background", 1: "circle", 2: "square", 3: "triangle"},
}
DATA_CFG = {
    "test_dataloader": {
        "batch_size": 2,
        "num_workers": 0,
        "dataset": {
            "path": "segaccel/synthetic",
            "synthetic": {"num_train": 2, "num_val": 3, "image_size": [32, 48], "seed": 5},
            "split": "validation",
            "pipeline": [{"type": "PackSegInputs"}],
        },
    },
    "test_evaluator": {"type": "IoUMetric"},
}
COMMIT = {"main": "1" * 40, "v1": "2" * 40}
# each source → the weights file the door reads for it
READS = {
    "model.safetensors": "model.safetensors",
    "pytorch_model.bin": "pytorch_model.bin",
    "mmseg.pth": "iter_80.pth",
    "bin folder": "pytorch_model.bin",
    "org/tiny-seg": "model.safetensors",
    "org/tiny-seg-bin@v1": "pytorch_model.bin",
}
SOURCES = list(READS)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path]:
    """The source weights, written once in every local form; returns (state dict, folder of forms)."""
    torch.manual_seed(0)
    model = Segmentor(**MODEL_CFG)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_()
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    root = tmp_path_factory.mktemp("weights")
    model.save_pretrained(root / "saved")  # config.json + model.safetensors
    (root / "bin").mkdir()
    shutil.copy(root / "saved" / "config.json", root / "bin" / "config.json")
    torch.save(state, root / "bin" / "pytorch_model.bin")
    (root / "mmseg").mkdir()
    shutil.copy(root / "saved" / "config.json", root / "mmseg" / "config.json")
    mmseg_checkpoint = {
        "meta": {"iter": 80, "mmseg_version": "1.2.2"},
        "state_dict": {f"module.{k}": v for k, v in state.items()},
    }
    torch.save(mmseg_checkpoint, root / "mmseg" / "iter_80.pth")
    return state, root


def cache_repo(cache: Path, repo_id: str, files: dict[str, Path], revision: str) -> None:
    """Lay out `files` as `repo_id` at `revision` in the Hugging Face cache (refs/ + snapshots/)."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / revision).write_text(COMMIT[revision])
    snapshot = folder / "snapshots" / COMMIT[revision]
    snapshot.mkdir(parents=True)
    for name, path in files.items():
        shutil.copy(path, snapshot / name)


@pytest.fixture
def where(source, offline_cache) -> dict[str, str]:
    """Each source's spelling, with the Hub ids cached (offline)."""
    _, root = source
    cache_repo(offline_cache, "org/tiny-seg", {p.name: p for p in (root / "saved").iterdir()}, "main")
    cache_repo(offline_cache, "org/tiny-seg-bin", {p.name: p for p in (root / "bin").iterdir()}, "v1")
    return {
        "model.safetensors": str(root / "saved" / "model.safetensors"),
        "pytorch_model.bin": str(root / "bin" / "pytorch_model.bin"),
        "mmseg.pth": str(root / "mmseg" / "iter_80.pth"),
        "bin folder": str(root / "bin"),
        "org/tiny-seg": "org/tiny-seg",
        "org/tiny-seg-bin@v1": "org/tiny-seg-bin@v1",
    }


def assert_loaded(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    different = [k for k in state if not torch.equal(loaded[k], state[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def write_config(folder: Path) -> Path:
    path = folder / "tiny.yaml"
    dump_config({"model": {"type": "Segmentor", **MODEL_CFG}, **DATA_CFG}, path)
    return path


@pytest.mark.parametrize("name", SOURCES)
def test_load_from(name, source, where, tmp_path, fresh_accelerate):
    from segaccel.engine.runner import Runner

    state, _ = source
    cfg = load_config(write_config(tmp_path), [f"load_from={where[name]}"])
    model = Runner(cfg, work_dir=tmp_path / "run").build_model()
    assert_loaded(model, state)


@pytest.mark.parametrize("name", SOURCES)
def test_checkpoint_option_of_the_test_script(name, source, where, tmp_path, fresh_accelerate, monkeypatch):
    spec = importlib.util.spec_from_file_location("segaccel_test_script", ROOT / "scripts" / "test.py")
    test_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_script)
    loaded_into = []  # the model the door loaded the weights into (the one evaluated)
    load_state_dict = Segmentor.load_state_dict

    def spy(self, *args, **kwargs):
        loaded_into.append(self)
        return load_state_dict(self, *args, **kwargs)

    monkeypatch.setattr(Segmentor, "load_state_dict", spy)
    state, _ = source
    args = [str(write_config(tmp_path)), "--checkpoint", where[name], "--work-dir", str(tmp_path / "w")]
    metrics = test_script.main(args)
    assert len(loaded_into) == 1 and 0 <= metrics["mIoU"] <= 100
    assert_loaded(loaded_into[0], state)


@pytest.mark.parametrize("name", SOURCES)
def test_from_pretrained(name, source, where):
    """A file's model is described by the config.json beside it; a folder or repo carries its own."""
    state, _ = source
    assert_loaded(Segmentor.from_pretrained(where[name]), state)


@pytest.mark.parametrize("name", SOURCES)
def test_load_pretrained_weights_and_the_file_it_reads(name, source, where):
    state, _ = source
    model = Segmentor(**MODEL_CFG)
    used = load_pretrained_weights(model, where[name], strict=True)
    assert_loaded(model, state)
    assert Path(used).name == READS[name]
    assert resolve_weights_file(where[name]) == Path(used)


def test_sources_are_told_apart(tmp_path, offline_cache):
    (tmp_path / "org").mkdir()
    assert weights_source("org/name@v2").kind == "hub" and weights_source("org/name@v2").revision == "v2"
    assert weights_source("org/name", revision="v3").revision == "v3"
    with pytest.raises(ValueError, match="differs from revision='main'"):
        weights_source("org/name@v2", revision="main")
    for missing in ("./org/name", "org/name.safetensors", "a/b/c", "~/x.pth", "name", "org/name@"):
        with pytest.raises(FileNotFoundError, match="no such file or folder, and not a Hub model id"):
            weights_source(missing)
    with pytest.raises(FileNotFoundError, match="the Hub model 'org/absent' has no model.safetensors"):
        resolve_weights_file("org/absent@v1")
    with pytest.raises(FileNotFoundError, match=r"no weights file in .*org \(expected a model.safetensors"):
        resolve_weights_file(tmp_path / "org")


def test_the_detection_table():
    tensor = torch.zeros(1)
    assert format_of({"model_type": "segformer"}, {"backbone.x": tensor}) is TRANSFORMERS_SEGFORMER
    assert format_of(None, {"module.backbone.x": tensor}) is MMSEGMENTATION
    assert format_of(None, {"data_preprocessor.mean": tensor, "backbone.x": tensor}) is MMSEGMENTATION
    assert format_of({"backbone": {"type": "ResNetV1c"}}, {"backbone.x": tensor}) is SEGACCEL
    assert format_of_config({"model_type": "vit"}) is None  # a foreign config we cannot convert: not ours
    assert format_of_config(None) is None and format_of_config(["not", "a", "config"]) is None
    mmseg_names = {"module.backbone.x": tensor, "data_preprocessor.mean": tensor}
    assert list(MMSEGMENTATION.convert_state_dict(mmseg_names)) == ["backbone.x"]
