"""Output a file can hold: no bar off a terminal, strict `scalars.jsonl`, files that follow the umask.

A run with stdout/stderr redirected (nohup, SLURM, CI) must write plain log lines only (no `\\r`
redraws, no escape sequences); `scalars.jsonl` holds `null` for a NaN; every file a run writes has
the mode a plain write gives under the umask (safetensors and `tempfile.mkstemp` write 0600).
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from engine_helpers import ROOT, TRAIN_SCRIPT

from segaccel.config import dump_config, load_config
from segaccel.engine.atomic import replace_folder, temp_folder, write_files_atomically
from segaccel.engine.build import model_config
from segaccel.engine.export import export_model_folder
from segaccel.engine.logging import ScalarLogger, on_terminal, progress_bar
from segaccel.file_modes import current_umask, follow_umask
from segaccel.models import Segmentor  # noqa: F401  (registers the models)
from segaccel.registry import MODELS


def strict_json(line: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def test_scalars_jsonl_writes_null_for_nan_and_inf(tmp_path):
    logger = ScalarLogger(SimpleNamespace(is_main_process=True), tmp_path, max_iters=4, use_trackers=False)
    logger.log("train", 1, {"loss": float("nan"), "lr": 0.5, "grad_norm": float("inf")})
    logger.log("val", 2, {"mIoU": 61.25, "mDice": float("-inf")})
    lines = (tmp_path / "scalars.jsonl").read_text().splitlines()
    assert [strict_json(x) for x in lines] == [
        {"mode": "train", "iter": 1, "loss": None, "lr": 0.5, "grad_norm": None},
        {"mode": "val", "iter": 2, "mIoU": 61.25, "mDice": None},
    ]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not on_terminal()
    assert progress_bar(range(3), is_main=True).disable
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    assert on_terminal()
    bar = progress_bar(range(3), is_main=True, file=sys.stderr)
    assert not bar.disable
    bar.close()
    assert progress_bar(range(3), is_main=False).disable  # never on other processes


def modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in sorted(folder.rglob("*"))}


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_current_umask_reads_without_changing(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_written_model_folder_and_checkpoint_follow_the_umask(tiny_config, tmp_path, umask):
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    assert (file_mode, dir_mode) == {0o022: (0o644, 0o755), 0o027: (0o640, 0o750)}[umask]
    cfg = load_config(tiny_config)
    model = MODELS.build(model_config(cfg))

    out = tmp_path / "model"  # a fresh folder (renamed into place) ...
    export_model_folder(out, model, cfg, {"mIoU": 50.0}, None, iteration=3)
    found = modes(out)
    assert set(found) == {"README.md", "config.json", "config.yaml", "metrics.json", "model.safetensors"}
    assert found == dict.fromkeys(found, file_mode)
    assert stat.S_IMODE(out.stat().st_mode) == dir_mode
    export_model_folder(out, model, cfg, None, None, iteration=6)  # ... and files replaced one by one
    assert modes(out) == dict.fromkeys(modes(out), file_mode)

    model.save_pretrained(tmp_path / "saved")  # the plain save_pretrained too (safetensors writes 0600)
    assert modes(tmp_path / "saved")["model.safetensors"] == file_mode

    dump_config({"a": 1}, tmp_path / "c" / "config.yaml")  # mkstemp inside
    assert modes(tmp_path / "c") == {"config.yaml": file_mode}

    def write(folder: Path) -> None:
        os.close(os.open(folder / "private.bin", os.O_CREAT | os.O_WRONLY, 0o600))
        (folder / "sub").mkdir(mode=0o700)
        (folder / "sub" / "x.txt").write_text("x")
        os.chmod(folder / "sub" / "x.txt", 0o600)

    write_files_atomically(tmp_path / "files", write)
    assert modes(tmp_path / "files") == {"private.bin": file_mode, "sub": dir_mode, "sub/x.txt": file_mode}
    checkpoint = temp_folder(tmp_path / "checkpoints" / "iter_3")
    write(checkpoint)
    replace_folder(checkpoint, tmp_path / "checkpoints" / "iter_3")
    found = modes(tmp_path / "checkpoints" / "iter_3")
    assert found == {"private.bin": file_mode, "sub": dir_mode, "sub/x.txt": file_mode}


def test_follow_umask_keeps_a_script_runnable_and_skips_links(tmp_path, umask):
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o700)
    target = tmp_path / "private"
    target.write_text("p")
    os.chmod(target, 0o600)
    (tmp_path / "link").symlink_to(target)
    follow_umask(script)
    follow_umask(tmp_path / "link")
    assert stat.S_IMODE(script.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # a link's target is not changed through it


@pytest.mark.e2e
def test_training_with_output_to_a_file_is_plain_and_follows_the_umask(tiny_config, tmp_path):
    """`scripts/train.py ... > out.log 2>&1` under umask 027: plain lines, files 0640, folders 0750."""
    work_dir = tmp_path / "run"
    log = tmp_path / "out.log"
    with open(log, "w") as out:
        subprocess.run(
            ["sh", "-c", 'umask 027 && exec "$@"', "sh", sys.executable, str(TRAIN_SCRIPT), str(tiny_config)]
            + ["--work-dir", str(work_dir), "default_hooks.logger.interval=2"],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=300,
        )
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    assert "train:" not in text and "it/s" not in text  # no bar, not even a final one
    lines = [x for x in text.splitlines() if "Iter(train)" in x]
    assert [x.split("Iter(train) ")[1].split("]")[0] + "]" for x in lines] == ["[2/6]", "[4/6]", "[6/6]"]
    assert all(x.startswith("20") for x in lines)  # each on a line of its own, timestamp first

    found = modes(work_dir)
    assert {"model/model.safetensors", "model/config.yaml", "logs/scalars.jsonl"} <= set(found)
    wrong = {k: oct(v) for k, v in found.items() if v != (0o750 if (work_dir / k).is_dir() else 0o640)}
    assert not wrong, wrong
    for line in (work_dir / "logs" / "scalars.jsonl").read_text().splitlines():
        strict_json(line)
