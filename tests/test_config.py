"""Config loading: `_base_` inheritance, dotted overrides, dumping."""

import pytest
import yaml

from segaccel.config import apply_overrides, dump_config, get_path, load_config, parse_override
from segaccel.registry import ConfigError


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def configs(tmp_path):
    write(
        tmp_path / "_base_" / "model.yaml",
        "model:\n"
        "  type: EncoderDecoder\n"
        "  backbone: {type: ResNet, depth: 50, out_indices: [0, 1, 2, 3]}\n"
        "  decode_head: {type: PSPHead, channels: 512}\n"
        "optimizer: {lr: 0.01}\n"
        "crop_size: [512, 512]\n",
    )
    write(tmp_path / "_base_" / "schedule.yaml", "model:\n  backbone: {depth: 101}\noptimizer: {lr: 0.02}\n")
    return tmp_path


def test_bases_merge_dicts_key_by_key_and_replace_lists(configs):
    child = write(
        configs / "pspnet" / "psp.yaml",
        "_base_: [../_base_/model.yaml, ../_base_/schedule.yaml]\n"
        "model:\n  decode_head: {channels: 256}\n"
        "crop_size: [256, 128]\n",
    )
    cfg = load_config(child)
    assert cfg == {
        "model": {
            "type": "EncoderDecoder",
            "backbone": {"type": "ResNet", "depth": 101, "out_indices": [0, 1, 2, 3]},  # later base wins
            "decode_head": {"type": "PSPHead", "channels": 256},  # the file wins over its bases
        },
        "optimizer": {"lr": 0.02},
        "crop_size": [256, 128],  # lists are replaced, not merged
    }


def test_single_base_as_a_string(configs):
    child = write(configs / "child.yaml", "_base_: _base_/model.yaml\nseed: 3\n")
    cfg = load_config(child)
    assert cfg["seed"] == 3 and cfg["model"]["backbone"]["depth"] == 50


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "_base_: [b.yaml]\nx: 1\n")
    write(tmp_path / "b.yaml", "_base_: [a.yaml]\ny: 2\n")
    with pytest.raises(ConfigError, match=r"_base_ cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(tmp_path / "a.yaml")


def test_missing_base_names_the_including_file(tmp_path):
    write(tmp_path / "a.yaml", "_base_: [nope.yaml]\n")
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml not found \(a _base_ of .*a\.yaml\)"):
        load_config(tmp_path / "a.yaml")


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping at the top level, got list"):
        load_config(write(tmp_path / "a.yaml", "- 1\n- 2\n"))


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    # YAML 1.1 reads `6e-5` as a string; configs write learning rates that way.
    cfg = load_config(write(tmp_path / "a.yaml", "lr: 6e-5\nname: 1e5x\n"), ["wd=1E-2"])
    assert cfg == {"lr": 6e-5, "name": "1e5x", "wd": 0.01}


def test_dotted_overrides(configs):
    cfg = load_config(
        configs / "_base_" / "model.yaml",
        [
            "model.backbone.depth=18",  # int
            "optimizer.lr=1e-3",  # float
            "optimizer.momentum=0.9",
            "crop_size=[640, 480]",  # list
            "model.backbone.frozen=true",  # bool
            "train_cfg.max_iters=200",  # nested creation
            "model.backbone.out_indices.2=7",  # list index
            "model.decode_head={dropout_ratio: 0.1}",  # a mapping merges into a mapping
            "work_dir=work_dirs/psp",  # string
            "load_from=",  # empty is None
        ],
    )
    assert cfg["model"]["backbone"] == {
        "type": "ResNet",
        "depth": 18,
        "out_indices": [0, 1, 7, 3],
        "frozen": True,
    }
    assert cfg["optimizer"] == {"lr": 0.001, "momentum": 0.9}
    assert cfg["crop_size"] == [640, 480]
    assert cfg["train_cfg"] == {"max_iters": 200}
    assert cfg["model"]["decode_head"] == {"type": "PSPHead", "channels": 512, "dropout_ratio": 0.1}
    assert cfg["work_dir"] == "work_dirs/psp" and cfg["load_from"] is None
    assert get_path(cfg, "model.backbone.depth") == 18
    assert get_path(cfg, "model.neck.in_channels", default="none") == "none"


def test_overrides_leave_the_input_alone_and_fail_clearly():
    cfg = {"pipeline": [{"type": "Resize"}], "seed": 0}
    out = apply_overrides(cfg, ["pipeline.0.keep_ratio=false"])
    assert out["pipeline"] == [{"type": "Resize", "keep_ratio": False}]
    assert cfg["pipeline"] == [{"type": "Resize"}]
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("seed")
    with pytest.raises(ConfigError, match="empty key part"):
        parse_override("model..depth=1")
    with pytest.raises(ConfigError, match="'3' is not a valid index into a list of 1"):
        apply_overrides(cfg, ["pipeline.3.scale=1"])
    with pytest.raises(ConfigError, match="cannot descend into 'x' of a int"):
        apply_overrides(cfg, ["seed.x.y=1"])


def test_dump_config_round_trip(configs, tmp_path):
    cfg = load_config(configs / "_base_" / "model.yaml", ["optimizer.lr=6e-5"])
    cfg["crop_size"] = (512, 256)  # tuples are written as lists
    out = tmp_path / "work" / "config.yaml"
    dump_config(cfg, out)
    loaded = load_config(out)
    assert loaded == {**cfg, "crop_size": [512, 256]}
    assert isinstance(loaded["optimizer"]["lr"], float)
    assert list(yaml.safe_load(out.read_text())) == list(cfg)  # key order kept
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]  # no temporary file left
