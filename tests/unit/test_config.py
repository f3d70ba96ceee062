from __future__ import annotations

from typing import Any

import pytest

from pykata.domain.config import build_config, merge, parse_toml
from pykata.domain.errors import ConfigError
from pykata.host.config_files import load_config


def _defaults() -> dict[str, Any]:
    import importlib.resources

    text = importlib.resources.files("pykata.domain").joinpath("defaults.toml").read_text()
    return parse_toml(text, "defaults")


def test_defaults_define_every_key() -> None:
    cfg = build_config([("defaults", _defaults())])
    assert cfg.hypervisor.default_memory == 2048
    assert cfg.hypervisor.default_vcpus == 1.0
    assert cfg.agent.transport == "auto"
    assert cfg.warnings == ()


def test_merge_tables_per_key_and_replaces_arrays() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    over = {"a": {"y": [3]}, "b": 2}
    assert merge(base, over) == {"a": {"x": 1, "y": [3]}, "b": 2}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"hypervisor": {"qemu": {"default_memory": "big"}}}, "default_memory = 'big'"),
        ({"hypervisor": {"qemu": {"default_memory": 8}}}, "at least 64"),
        ({"hypervisor": {"qemu": {"accel": "xen"}}}, "one of auto, kvm, tcg"),
        ({"hypervisor": {"qemu": {"default_vcpus": True}}}, "expected float"),
        ({"agent": {"pykata": {"transport": "tcp"}}}, "transport = 'tcp'"),
    ],
    ids=["wrong-type", "too-small", "bad-choice", "bool-is-not-number", "bad-transport"],
)
def test_bad_values_name_file_key_and_value(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        build_config([("defaults", _defaults()), ("/etc/x.toml", override)])
    assert str(err.value).startswith("/etc/x.toml: ")


def test_unknown_keys_warn() -> None:
    cfg = build_config([("defaults", _defaults()),
                        ("f.toml", {"hypervisor": {"qemu": {"defualt_memory": 1}}, "bogus": {}})])
    assert cfg.warnings == ("f.toml: unknown key hypervisor.qemu.defualt_memory",
                            "f.toml: unknown section [bogus] ignored")


def test_fractional_vcpus_accepted() -> None:
    cfg = build_config([("defaults", _defaults()),
                        ("f", {"hypervisor": {"qemu": {"default_vcpus": 1.5}}})])
    assert cfg.hypervisor.default_vcpus == 1.5


def test_invalid_toml_names_file() -> None:
    with pytest.raises(ConfigError, match="bad.toml"):
        parse_toml("[hypervisor", "bad.toml")


def test_load_config_lookup_order(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "env.toml"
    env_file.write_text("[hypervisor.qemu]\ndefault_memory = 512\n")
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("[hypervisor.qemu]\ndefault_memory = 1024\n")
    monkeypatch.setenv("PYKATA_CONF_FILE", str(env_file))
    assert load_config().hypervisor.default_memory == 512
    assert load_config(str(explicit)).hypervisor.default_memory == 1024
    with pytest.raises(ConfigError, match="missing.toml"):
        load_config(str(tmp_path / "missing.toml"))
