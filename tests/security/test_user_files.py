"""Nothing a user wrote is deleted or silently overwritten.

- A training run exports into `model/` and `best_model/` and checkpoints into `checkpoints/`, where a
  user keeps notes, a sub-folder, a README, and folders named like temporaries (`.old_model`,
  `.tmp_model`, `checkpoints/.tmp_mine`): all stay byte for byte.
- Destinations that cannot be written (`model` a file, `config.json` a folder) fail in seconds,
  before training, and are left as they were.
- `scripts/test.py --out-dir/--show-dir`: samples with the same file stem in different folders
  each get their own file, and the log counts the files written.
- `convert_checkpoint.py` refuses to overwrite without `--force`.
"""

from __future__ import annotations

import io
import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from security_helpers import TINY_CONFIG, tiny_segformer

from segaccel.config import load_config
from segaccel.engine.export import export_model_folder
from segaccel.engine.runner import Runner
from segaccel.engine.test_outputs import OutputNames, unique_output_names

FAST = [
    "train_cfg.max_iters=4",
    "train_cfg.val_interval=2",
    "default_hooks.checkpoint.interval=2",
    "default_hooks.checkpoint.save_best=mIoU",
]
USER_FILES = {
    "model/notes.txt": "my notes on this model\n",
    "model/README.md": "# my own card\n",
    "model/sub/eval.csv": "a,b\n1,2\n",
    "best_model/notes.txt": "keep me\n",
    ".old_model/keep.txt": "a user's folder\n",
    ".tmp_model/keep.txt": "a user's folder\n",
    "checkpoints/.tmp_mine/keep.txt": "a user's folder\n",
    "checkpoints/.old_iter_2/keep.txt": "a user's folder\n",
    "checkpoints/mine.txt": "notes\n",
}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


def test_a_training_run_leaves_every_user_file_alone(tiny_config, tmp_path, fresh_accelerate):
    work_dir = tmp_path / "run"
    for name, text in USER_FILES.items():
        (work_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (work_dir / name).write_text(text)
    Runner(load_config(tiny_config, FAST), work_dir=work_dir).train()

    for name, text in USER_FILES.items():
        assert (work_dir / name).read_text() == text, name
    for folder in ("model", "best_model"):
        written = {p.name for p in (work_dir / folder).iterdir()}
        assert {"config.json", "model.safetensors", "config.yaml", "metrics.json"} <= written, folder
    assert "segaccel" in (work_dir / "best_model" / "README.md").read_text()  # the generated card
    assert not [p for p in work_dir.rglob(".segaccel-*")]  # no temporary of ours left


def test_an_export_replaces_only_its_own_files(tmp_path, caplog):
    model = tiny_segformer()
    out = tmp_path / "model"
    export_model_folder(out, model, {"model": {}}, {"mIoU": 50.0}, None, iteration=2)
    (out / "notes.txt").write_text("mine\n")
    (out / "logs").mkdir()
    first = (out / "model.safetensors").read_bytes()
    with torch.no_grad():
        model.decode_head.conv_seg.weight.add_(1.0)
    export_model_folder(out, model, {"model": {}}, None, None, iteration=4)  # no metrics this time

    assert (out / "model.safetensors").read_bytes() != first  # replaced
    assert not (out / "metrics.json").exists()  # an export's own stale file: removed
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "logs").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda w: (w / "model").write_text("a file"), r"model exists and is not a folder"),
        (lambda w: (w / "best_model").write_text("a file"), r"best_model exists and is not a folder"),
        (lambda w: (w / "checkpoints").write_text("a file"), r"checkpoints exists and is not a folder"),
        (lambda w: (w / "model" / "config.json").mkdir(parents=True), r"config\.json is not a file"),
    ],
    ids=["model a file", "best_model a file", "checkpoints a file", "config.json a folder"],
)
def test_an_unwritable_destination_fails_before_training(
    make, message, tiny_config, tmp_path, fresh_accelerate
):
    work_dir = tmp_path / "run"
    work_dir.mkdir()
    make(work_dir)
    before = contents(work_dir)
    with pytest.raises(OSError, match=message):
        Runner(load_config(tiny_config, FAST), work_dir=work_dir).train()
    assert contents(work_dir) == before  # nothing trained, nothing moved (the log aside)


def contents(folder):
    found = (p.relative_to(folder) for p in folder.rglob("*"))
    return sorted(str(p) for p in found if p.parts[0] != "logs")


# --- test outputs: one file per sample ------------------------------------------------------------------
def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_test_outputs_keep_one_file_per_sample_with_the_same_stem(tmp_path, fresh_accelerate):
    paths = ["train/a/img.png", "val/b/img.png", "img.png", "c/img.png"]
    rng = np.random.default_rng(0)
    rows = {
        "image": [{"bytes": png(rng.integers(0, 255, (24, 40, 3), np.uint8)), "path": p} for p in paths],
        "label": [{"bytes": png(np.full((24, 40), i % 3, np.uint8)), "path": None} for i in range(4)],
    }
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "val.parquet")
    model = tiny_segformer()
    model.save_pretrained(tmp_path / "model")
    cfg = {
        "model": {"type": "Segmentor", **json.loads((tmp_path / "model" / "config.json").read_text())},
        "test_dataloader": {
            "batch_size": 2,
            "dataset": {
                "path": "parquet",
                "data_files": {"validation": str(tmp_path / "val.parquet")},
                "split": "validation",
                "pipeline": [{"type": "PackSegInputs"}],
            },
        },
    }
    runner = Runner(cfg, work_dir=tmp_path / "work")
    runner.test(model=model, out_dir=tmp_path / "out", show_dir=tmp_path / "show")

    for folder in ("out", "show"):
        written = sorted(str(p.relative_to(tmp_path / folder)) for p in (tmp_path / folder).rglob("*.png"))
        assert written == sorted(paths), folder
    masks = [np.asarray(Image.open(tmp_path / "out" / p)) for p in paths]
    assert all(m.shape == (24, 40) for m in masks)
    log = (tmp_path / "work" / "logs" / "train.log").read_text()
    assert log.count("wrote 4 files (this process's)") == 2  # the count is the count written


def test_output_names():
    # unique stems stay stems (the common case, names a benchmark server expects)
    assert unique_output_names(["/d/a.jpg", "/d/b.jpg"]) == ["a", "b"]
    # repeated stems: paths relative to the images' common folder
    assert unique_output_names(["/d/x/img.png", "/d/y/img.png", "/d/img.png"]) == ["x/img", "y/img", "img"]
    # the same relative path twice (or no path): the dataset index as a stable suffix
    names = unique_output_names(["a/img.png", "a/img.jpg", None, "b.png"])
    assert names == ["a/img_0", "a/img_1", "000002", "b"]
    # absolute and relative paths mixed: stems, suffixed where they repeat
    assert unique_output_names(["/d/img.png", "img.png"]) == ["img_0", "img_1"]
    # no paths known (a stream): each process suffixes the repeats it sees
    stream_names = OutputNames(None)

    class Sample(dict):
        def get(self, key, default=None):
            return super().get(key, default)

    assert [stream_names(Sample(img_path=p), None) for p in ["x/img.png", "y/img.png", "z/other.png"]] == [
        "img",
        "img_1",
        "other",
    ]


# --- convert_checkpoint.py --force ------------------------------------------------------------------------
def test_convert_checkpoint_refuses_to_overwrite_without_force(tmp_path, script_module):
    tiny_segformer().save_pretrained(tmp_path / "source")
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("my: own config\n")
    (out / "notes.txt").write_text("mine\n")
    convert = script_module("convert_checkpoint")
    with pytest.raises(SystemExit, match=r"out already holds config\.yaml; nothing was written.*--force"):
        convert.main([str(tmp_path / "source"), str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "notes.txt"]
    assert (out / "config.yaml").read_text() == "my: own config\n"

    convert.main([str(tmp_path / "source"), str(out), "--force"])
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in out.iterdir()}
    assert (out / "notes.txt").read_text() == "mine\n"
    with pytest.raises(SystemExit, match=r"already holds config\.json, model\.safetensors, README\.md"):
        convert.main([str(tmp_path / "source"), str(out)])


def test_an_output_folder_that_is_a_file_is_refused_before_predicting(tmp_path):
    from segaccel.engine.test_outputs import OverlayWriter, PredictionWriter

    (tmp_path / "preds").write_text("my file\n")
    with pytest.raises(NotADirectoryError, match=r"--out-dir .*preds: exists and is not a folder"):
        PredictionWriter(tmp_path / "preds")
    with pytest.raises(NotADirectoryError, match=r"--show-dir .*preds: exists and is not a folder"):
        OverlayWriter(tmp_path / "preds", palette=[[0, 0, 0]])
    assert (tmp_path / "preds").read_text() == "my file\n"


def test_only_segaccels_own_temporaries_are_cleaned_up(tmp_path):
    from segaccel.engine.atomic import MARKER
    from segaccel.engine.export import check_output_destinations

    ours, lookalike = tmp_path / ".segaccel-tmp-model", tmp_path / ".segaccel-tmp-best_model"
    for folder in (ours, lookalike, tmp_path / ".tmp_model"):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    (ours / MARKER).touch()  # left by an interrupted export
    check_output_destinations(tmp_path, best_model=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".segaccel-tmp-best_model", ".tmp_model"]
    # a folder of the user's under a temporary's name is never deleted: the export says so instead
    with pytest.raises(FileExistsError, match=r"segaccel-tmp-best_model exists and was not made by segaccel"):
        export_model_folder(tmp_path / "best_model", tiny_segformer(), {"model": {}})
    assert (lookalike / "config.json").read_text() == "{}"
