"""Untrusted model folders: a broken or hostile config.json or safetensors file gives a clear error.

Pickle refusal (`weights_only=True`), strict loading and the offline cache are tested in tests/hub; here
the files of a saved model are damaged one way at a time and `Segmentor.from_pretrained` must name the
file and the problem, never build anything outside the registry. Malformed `config.json` contents are
tried from a local folder and from the (hand-built, offline) Hugging Face cache.
"""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from hub_testing import cache_folder, tiny_segformer

from segaccel.models import Segmentor
from segaccel.registry import ConfigError


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


# --- malformed config.json contents: (new contents or an edit, the error expected) --------------------
def write_config(text):
    return lambda folder: (folder / "config.json").write_text(text)


NOT_AN_OBJECT = r"config\.json: expected a JSON object describing the model .*got "
MALFORMED = {
    "a JSON list": (write_config("[1, 2]"), NOT_AN_OBJECT + "an array"),
    "a JSON string": (write_config('"segformer"'), NOT_AN_OBJECT + "a string"),
    "a JSON number": (write_config("3"), NOT_AN_OBJECT + "a number"),
    "JSON null": (write_config("null"), NOT_AN_OBJECT + "null"),
    "backbone a list": (
        edit_config(lambda c: c.update(backbone=[c["backbone"]])),
        r"config\.json: `backbone` must be an object, got an array",
    ),
    "decode_head null": (
        edit_config(lambda c: c.update(decode_head=None)),
        r"config\.json: `decode_head` must be an object, got null",
    ),
    "no backbone": (edit_config(lambda c: c.pop("backbone")), r"config\.json: missing backbone"),
    "type not a string": (
        edit_config(lambda c: c["decode_head"].update(type=["SegformerHead"])),
        r"config\.json: model\.decode_head\.type: `type` must be a string naming a registered model",
    ),
    "type unregistered": (
        edit_config(lambda c: c["decode_head"].update(type="transformers.SegformerDecodeHead")),
        r"config\.json: model\.decode_head\.type: unknown model type 'transformers\.SegformerDecodeHead'",
    ),
    "id2label a list": (
        edit_config(lambda c: c.update(id2label=["sky", "road", "car"])),
        r"config\.json: `id2label` must be an object or null, got an array",
    ),
    "id2label keys not class indices": (
        edit_config(lambda c: c.update(id2label={"sky": "0"})),
        r"config\.json: model\.id2label: keys must be class indices",
    ),
    "label2id values not ints": (
        edit_config(lambda c: c.update(label2id={"sky": "zero", "road": 1, "car": 2})),
        r"config\.json: model\.label2id: values must be class indices",
    ),
    "num_classes a string": (
        edit_config(lambda c: c["decode_head"].update(num_classes="3")),
        r"config\.json: model\.decode_head\.num_classes: expected a positive int, got '3'",
    ),
    "num_classes a float": (
        edit_config(lambda c: c["decode_head"].update(num_classes=3.0)),
        r"config\.json: model\.decode_head\.num_classes: expected a positive int, got 3\.0",
    ),
    "num_classes a boolean": (
        edit_config(lambda c: c["decode_head"].update(num_classes=True)),
        r"config\.json: model\.decode_head\.num_classes: expected a positive int, got True",
    ),
    "num_classes zero": (
        edit_config(lambda c: c["decode_head"].update(num_classes=0)),
        r"config\.json: model\.decode_head\.num_classes: expected a positive int, got 0",
    ),
    "test_cfg.mode unknown": (
        edit_config(lambda c: c.update(test_cfg={"mode": "tiles"})),
        r"config\.json: model\.test_cfg\.mode: expected 'whole' or 'slide', got 'tiles'",
    ),
    "test_cfg a list": (
        edit_config(lambda c: c.update(test_cfg=["slide"])),
        r"config\.json: `test_cfg` must be an object or null, got an array",
    ),
    "palette a string": (
        edit_config(lambda c: c.update(palette="red")),
        r"config\.json: `palette` must be an array or null, got a string",
    ),
    "a colour out of range": (
        edit_config(lambda c: c.update(palette=[[0, 0, 0], [1, 2, 3], [256, 0, 0]])),
        r"config\.json: model\.palette\[2\]: expected \[r, g, b\] ints in 0\.\.255",
    ),
    "format_version newer": (
        # a newer layout may have entries this segaccel does not know: the version is reported first
        edit_config(lambda c: c.update(format_version=99, tiling={"mode": "auto"})),
        r"config\.json: model\.format_version: 99 is not supported by this segaccel \(it reads 1\.\.1\); "
        r"the model was saved by a newer segaccel: upgrade segaccel",
    ),
    "format_version a string": (
        edit_config(lambda c: c.update(format_version="1")),
        r"config\.json: model\.format_version: expected an int",
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_config_json_in_a_folder(name, saved, tmp_path):
    damage, message = MALFORMED[name]
    folder = tmp_path / "m"
    shutil.copytree(saved, folder)
    damage(folder)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(folder))}/" + message):
        Segmentor.from_pretrained(folder)


@pytest.mark.parametrize(
    "name",
    [
        "a JSON list",
        "JSON null",
        "decode_head null",
        "num_classes a string",
        "test_cfg.mode unknown",
        "format_version newer",
    ],
)
def test_malformed_config_json_in_the_hub_cache(name, saved, tmp_path, offline_cache):
    damage, message = MALFORMED[name]
    folder = tmp_path / "m"
    shutil.copytree(saved, folder)
    damage(folder)
    cache_folder(offline_cache, "org/damaged", folder)
    with pytest.raises(ConfigError, match=r"^org/damaged/" + message):
        Segmentor.from_pretrained("org/damaged")


def test_an_entry_passed_to_from_pretrained_replaces_a_malformed_one(saved, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(saved, folder)
    edit_config(lambda c: c.update(test_cfg=["slide"]))(folder)
    model = Segmentor.from_pretrained(folder, test_cfg={"mode": "whole"})
    assert model.test_cfg == {"mode": "whole"}


def test_no_code_of_the_repo_is_imported_or_run(saved, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(saved, folder)
    marker = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Evil: pass\n")
    edit_config(lambda c: c["backbone"].update(type="modeling_evil.Evil"))(folder)
    with pytest.raises(ConfigError, match=r"model\.backbone\.type: unknown model type 'modeling_evil\.Evil'"):
        Segmentor.from_pretrained(folder)
    edit_config(lambda c: c.update(auto_map={"AutoModel": "modeling_evil.Evil"}))(folder)
    with pytest.raises(ConfigError, match=r"config\.json: unknown entries auto_map"):
        Segmentor.from_pretrained(folder)
    assert not marker.exists() and "modeling_evil" not in sys.modules
