"""Untrusted model folders: a broken or hostile config.json or safetensors file gives a clear error.

Pickle refusal (`weights_only=True`), strict loading and the offline cache are tested in tests/hub; here
the files of a saved model are damaged one way at a time and `Segmentor.from_pretrained` must name the
file and the problem, never build anything outside the registry.
"""

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))
from hub_testing import tiny_segformer  # noqa: E402

from segaccel.models import Segmentor  # noqa: E402
from segaccel.registry import ConfigError  # noqa: E402


def edit_config(change):
    def apply(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))

    return apply


def truncate(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


CASES = {
    "config.json not JSON": (
        lambda f: (f / "config.json").write_text('{"backbone": '),
        ConfigError,
        r"config\.json \(or another JSON file of the model\) is not valid JSON",
    ),
    "a type outside the registry": (
        edit_config(lambda c: c["backbone"].update(type="os.system")),
        ConfigError,
        r"config\.json: model\.backbone\.type: unknown model type 'os\.system'",
    ),
    "an unknown argument": (
        edit_config(lambda c: c["decode_head"].update(evil=1)),
        ConfigError,
        r"config\.json: model\.decode_head: wrong arguments for SegformerHead: .*'evil'",
    ),
    "an unknown entry": (
        edit_config(lambda c: c.update(evil=1)),
        ConfigError,
        r"config\.json: unknown entries evil",
    ),
    "no config.json": (
        lambda f: (f / "config.json").unlink(),
        FileNotFoundError,
        r"no config\.json found",
    ),
    "truncated safetensors": (
        truncate,
        ValueError,
        r"model\.safetensors: not a valid safetensors file \(.*\); an incomplete download or a corrupt file",
    ),
    "safetensors of junk": (
        lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 7),
        ValueError,
        r"model\.safetensors: not a valid safetensors file",
    ),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "good"
    tiny_segformer().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", list(CASES))
def test_damaged_model_folder(name, saved, tmp_path):
    damage, error, message = CASES[name]
    folder = tmp_path / "m"
    shutil.copytree(saved, folder)
    damage(folder)
    with pytest.raises(error, match=message):
        Segmentor.from_pretrained(folder)


def test_the_undamaged_folder_loads(saved):
    assert isinstance(Segmentor.from_pretrained(saved), Segmentor)
