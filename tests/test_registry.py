"""Registry: names to classes, defaults, and errors that name the config key."""

import pytest

from segaccel.registry import ConfigError, Registry


class ResNet:
    def __init__(self, depth: int, in_channels: int = 3, norm_cfg: dict | None = None) -> None:
        self.depth, self.in_channels, self.norm_cfg = depth, in_channels, norm_cfg


class ResNetV1c(ResNet):
    pass


def make_registry() -> Registry:
    registry = Registry("backbone")
    registry.register(ResNet, ResNetV1c)
    return registry


def test_build_with_config_and_defaults():
    registry = make_registry()
    cfg = {"type": "ResNetV1c", "depth": 50, "norm_cfg": {"type": "BN"}}
    net = registry.build(cfg, in_channels=4, depth=18)
    assert type(net) is ResNetV1c
    assert (net.depth, net.in_channels) == (50, 4)  # the config wins over a default, a default fills a gap
    assert cfg == {"type": "ResNetV1c", "depth": 50, "norm_cfg": {"type": "BN"}}  # not consumed
    assert net.norm_cfg is not cfg["norm_cfg"]  # built from a copy


def test_register_under_a_name_and_membership():
    registry = make_registry()
    registry.register(ResNet, name="ResNetAlias")
    assert registry.get("ResNetAlias") is ResNet
    assert "ResNet" in registry and "VGG" not in registry
    assert sorted(registry) == ["ResNet", "ResNetAlias", "ResNetV1c"]
    with pytest.raises(KeyError, match="'ResNet' is already registered"):
        registry.register(ResNetV1c, name="ResNet")
    registry.register(ResNet)  # registering the same class again is harmless


def test_unknown_type_names_the_type_the_key_and_close_matches():
    with pytest.raises(ConfigError) as info:
        make_registry().build({"type": "ResNetV1", "depth": 50}, key="model.backbone")
    message = str(info.value)
    assert "model.backbone.type" in message
    assert "'ResNetV1'" in message
    assert "Did you mean 'ResNetV1c'" in message


def test_wrong_arguments_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.backbone: wrong arguments for ResNet: .*'dept'"):
        make_registry().build({"type": "ResNet", "depth": 50, "dept": 50}, key="model.backbone")
    with pytest.raises(ConfigError, match=r"model\.backbone: wrong arguments for ResNet: .*depth"):
        make_registry().build({"type": "ResNet"}, key="model.backbone")


def test_missing_or_bad_type_and_non_mapping():
    registry = make_registry()
    with pytest.raises(ConfigError, match=r"neck: missing `type` \(one of ResNet, ResNetV1c\)"):
        registry.build({"depth": 50}, key="neck")
    with pytest.raises(ConfigError, match="must be a string"):
        registry.build({"type": 3})
    with pytest.raises(ConfigError, match="expected a mapping with a `type` key, got list"):
        registry.build(["ResNet"], key="model.backbone")
