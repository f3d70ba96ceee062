"""Finding and reading configuration files: lookup order, config.d drop-ins, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykata.domain.config import Config
from pykata.domain.errors import ConfigError
from pykata.host import config_files
from pykata.host.config_files import PACKAGED_CONFIG, config_path, dropins, load_config

MEM = "[hypervisor.qemu]\ndefault_memory = {}\n"


@pytest.fixture
def no_system_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """/etc/pykata/configuration.toml, moved somewhere a test controls (absent at first)."""
    path = tmp_path / "etc" / "configuration.toml"
    monkeypatch.setattr(config_files, "SYSTEM_CONFIG", path)
    monkeypatch.delenv("PYKATA_CONF_FILE", raising=False)
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_lookup_order(tmp_path: Path, no_system_file: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_path() == (PACKAGED_CONFIG, "packaged default")
    _write(no_system_file, MEM.format(256))
    assert config_path() == (no_system_file, "system file")
    assert load_config().hypervisor.default_memory == 256
    env_file = _write(tmp_path / "env.toml", MEM.format(512))
    monkeypatch.setenv("PYKATA_CONF_FILE", str(env_file))
    assert load_config().hypervisor.default_memory == 512
    explicit = _write(tmp_path / "explicit.toml", MEM.format(1024))
    assert config_path(str(explicit))[1] == "ConfigPath (--config)"
    assert load_config(str(explicit)).hypervisor.default_memory == 1024


def test_environ_can_be_passed_in(tmp_path: Path, no_system_file: Path) -> None:
    env_file = _write(tmp_path / "env.toml", MEM.format(512))
    cfg = load_config(environ={"PYKATA_CONF_FILE": str(env_file)})
    assert cfg.hypervisor.default_memory == 512


def test_packaged_default_gives_the_model_defaults(no_system_file: Path) -> None:
    cfg = load_config()
    assert cfg == Config()
    assert cfg.sources == (str(PACKAGED_CONFIG),)
    assert cfg.warnings == ()


@pytest.mark.parametrize("how", ["explicit", "env"])
def test_named_file_must_exist(tmp_path: Path, no_system_file: Path,
                               monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    missing = str(tmp_path / "missing.toml")
    if how == "env":
        monkeypatch.setenv("PYKATA_CONF_FILE", missing)
    with pytest.raises(ConfigError, match="missing.toml.*No such file"):
        load_config(missing if how == "explicit" else None)


def test_dropins_apply_in_lexical_order(tmp_path: Path, no_system_file: Path) -> None:
    main = _write(tmp_path / "configuration.toml",
                  MEM.format(1024) + "default_vcpus = 2\nnuma_mapping = ['0', '0']\n")
    _write(tmp_path / "config.d" / "20-b.toml", MEM.format(768))
    _write(tmp_path / "config.d" / "10-a.toml",
           MEM.format(512) + "numa_mapping = ['0']\n[runtime]\nenable_vcpus_pinning = true\n")
    cfg = load_config(str(main))
    assert cfg.hypervisor.default_memory == 768          # 20-b after 10-a
    assert cfg.hypervisor.default_vcpus == 2.0           # tables merge per key
    assert cfg.hypervisor.numa_mapping == ("0",)         # arrays are replaced
    assert cfg.runtime.enable_vcpus_pinning is True
    assert cfg.sources == (str(main), str(tmp_path / "config.d/10-a.toml"),
                           str(tmp_path / "config.d/20-b.toml"))


def test_other_files_in_config_d_are_ignored_with_a_warning(tmp_path: Path) -> None:
    main = _write(tmp_path / "configuration.toml", "")
    _write(tmp_path / "config.d" / "a.toml", "")
    _write(tmp_path / "config.d" / "b.toml.orig", "not toml [")
    _write(tmp_path / "config.d" / ".c.toml", "not toml [")
    (tmp_path / "config.d" / "d.toml").mkdir()
    files, warnings = dropins(main)
    assert files == [tmp_path / "config.d" / "a.toml"]
    assert [w.split(":")[0] for w in warnings] == [
        str(tmp_path / "config.d" / n) for n in (".c.toml", "b.toml.orig", "d.toml")]
    assert load_config(str(main)).warnings == tuple(warnings)


def test_dropin_with_a_syntax_error_is_named(tmp_path: Path) -> None:
    main = _write(tmp_path / "configuration.toml", MEM.format(1024))
    _write(tmp_path / "config.d" / "50-broken.toml", "[hypervisor.qemu\n")
    with pytest.raises(ConfigError, match="50-broken.toml: .*not valid TOML"):
        load_config(str(main))


def test_dropin_with_a_bad_value_is_named(tmp_path: Path) -> None:
    main = _write(tmp_path / "configuration.toml", MEM.format(1024))
    _write(tmp_path / "config.d" / "50-numa.toml", "[hypervisor.qemu]\nnuma_mapping = ['x']\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(main))
    assert err.value.source.endswith("50-numa.toml")
    assert "numa_mapping = ['x']: entry 'x'" in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[hypervisor.qemu]\ndefault_memory = -5\n", "default_memory = -5: must be at least 64"),
        ("[hypervisor.qemu]\ndefault_memory = '2G'\n", "expected an integer"),
        ("[hypervisor.qemu]\nnuma_mapping = [\"x\"]\n", "entry 'x'"),
        ("[hypervisor.qemu\n", "not valid TOML"),
        ("a = 1\na = 2\n", "not valid TOML"),
    ],
    ids=["negative-memory", "wrong-type", "numa-x", "unclosed-table", "duplicate-key"],
)
def test_broken_main_file(tmp_path: Path, text: str, message: str) -> None:
    main = _write(tmp_path / "configuration.toml", text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(str(main))
    assert str(err.value).startswith(str(main))


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    main = tmp_path / "configuration.toml"
    main.write_bytes(b"[runtime]\nstate_dir = \"/run/\xff\"\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(main))


def test_directory_as_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Is a directory"):
        load_config(str(tmp_path))
