"""The installed commands (`segaccel.cli`): one convention for every command, shipped configs found
without a clone, the resume config and command, the model card's usage, and the scripts' wrappers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from segaccel.cli import common
from segaccel.cli.main import COMMANDS
from segaccel.cli.main import main as segaccel
from segaccel.engine.resume_config import command_prefix, resume_command, resumed_config

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = (ROOT / "configs" / "quickstart.yaml").resolve()
    for name in ("configs/quickstart.yaml", "quickstart.yaml", "quickstart"):
        assert common.find_config(name).resolve() == expected
    local = tmp_path / "configs" / "quickstart.yaml"  # a file of that name here wins
    local.parent.mkdir()
    local.write_text("seed: 3\n")
    assert common.find_config("configs/quickstart.yaml") == Path("configs/quickstart.yaml")
    with pytest.raises(SystemExit, match="no such config file, nor a shipped config"):
        common.find_config("configs/nope.yaml")
    listed = common.list_configs()
    assert "configs/quickstart.yaml" in listed and not any("_base_" in c for c in listed)
    assert len(listed) == len([p for p in (ROOT / "configs").rglob("*.yaml") if "_base_" not in p.parts])


def test_segaccel_dispatches_and_lists(capsys):
    assert segaccel(["configs"]) == 0
    assert "configs/quickstart.yaml" in capsys.readouterr().out
    assert segaccel(["nope"]) == 2 and "no command 'nope'" in capsys.readouterr().err
    assert {"train", "test", "infer", "export", "benchmark"} <= set(COMMANDS)


def test_overrides_go_anywhere_and_splits_are_named_as_datasets_names_them(script_module):
    test_script = script_module("test")
    args = test_script.parse_args(
        ["M", "a.b=1", "--work-dir", "D", "test_dataloader.batch_size=3", "--split", "val"]
    )
    assert (args.target, args.work_dir, args.split) == ("M", "D", "validation")
    assert args.overrides == ["a.b=1", "test_dataloader.batch_size=3"]
    with pytest.raises(SystemExit):
        test_script.parse_args(["M", "stray"])  # neither an option nor key=value
    train = script_module("train").parse_args(
        ["train_cfg.max_iters=30", "C.yaml", "--resume", "--dataset", "DIR"]
    )
    assert (train.config, train.resume, train.dataset, train.overrides) == (
        "C.yaml",
        True,
        "DIR",
        ["train_cfg.max_iters=30"],
    )
    from segaccel.cli import browse_dataset, check_dataset

    assert check_dataset.parse_args(["C", "--split", "val", "x.y=1"]).split == "validation"
    assert browse_dataset.parse_args(["--split", "test", "C"]).split == "test"
    with pytest.raises(SystemExit):
        check_dataset.parse_args(["C", "--split", "dev"])


def test_benchmark_takes_overrides_anywhere_and_keeps_cfg_options(monkeypatch):
    import segaccel.benchmark.data as data_benchmark
    from segaccel.cli import benchmark

    monkeypatch.setattr(data_benchmark, "run", lambda args: args)
    args = benchmark.main(
        ["data", "a.b=1", "configs/quickstart.yaml", "--cfg-options", "c=2", "--num-workers", "0"]
    )
    assert args.cfg_options == ["a.b=1", "c=2"]  # in the order written
    assert Path(args.config).resolve() == (ROOT / "configs" / "quickstart.yaml").resolve()


def test_command_prefix_says_how_the_run_was_started(monkeypatch):
    for argv0, expected in (
        ("scripts/train.py", "python scripts/train.py"),
        ("/usr/bin/segaccel-train", "segaccel-train"),
        ("segaccel train", "segaccel train"),
        ("/x/site-packages/segaccel/cli/train.py", "python -m segaccel.cli.train"),
    ):
        monkeypatch.setattr(sys, "argv", [argv0])
        assert command_prefix() == expected
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert command_prefix() == "accelerate launch --num_processes 2 -m segaccel.cli.train"
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(sys, "argv", ["segaccel train"])
    assert resume_command("my cfg.yaml", "w") == "segaccel train 'my cfg.yaml' --work-dir w --resume"


def test_resume_restores_the_runs_config_with_new_overrides_on_top(tmp_path):
    run = {
        "seed": 0,
        "train_cfg": {"max_iters": 30},
        "param_scheduler": [{"type": "PolyLR", "end": "max_iters"}],
    }
    ckpt = tmp_path / "checkpoints" / "iter_12"
    ckpt.mkdir(parents=True)
    (ckpt / "segaccel_state.json").write_text(json.dumps({"iteration": 12, "config": run}))
    given = {"seed": 0, "train_cfg": {"max_iters": 4000}, "work_dir": str(tmp_path)}
    restored = resumed_config(given, tmp_path, True, [])
    assert restored["train_cfg"]["max_iters"] == 30 and restored["work_dir"] == str(tmp_path)
    assert resumed_config(given, tmp_path, True, ["train_cfg.max_iters=60"])["train_cfg"]["max_iters"] == 60
    assert resumed_config(given, tmp_path / "empty", True, []) is given  # nothing to resume: as given


def test_model_card_shows_from_pretrained_and_the_installed_command():
    from segaccel.model_card import build_model_card

    model_config = {
        "type": "EncoderDecoder",
        "backbone": {"type": "MixVisionTransformer"},
        "decode_head": {"type": "SegformerHead", "num_classes": 2},
    }
    text = str(build_model_card(model_config, repo_id="org/m", train_config={"seed": 0}))
    assert 'Segmentor.from_pretrained("org/m")' in text and "inference_model(model" in text
    assert (
        "segaccel infer image.jpg more_images/ --model org/m" in text and "segaccel train config.yaml" in text
    )
    assert "scripts/" not in text


def test_a_script_that_cannot_import_segaccel_says_what_to_do(tmp_path):
    copy = tmp_path / "scripts" / "train.py"
    copy.parent.mkdir()
    copy.write_text((ROOT / "scripts" / "train.py").read_text())
    # -S: no site-packages, so neither segaccel nor its dependencies can be imported
    done = subprocess.run(
        [sys.executable, "-S", str(copy), "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "train.py: cannot import" in done.stderr and "segaccel train ..." in done.stderr
