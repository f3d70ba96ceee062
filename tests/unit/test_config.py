"""The config model: merging, validation, unknown keys, and the rules between keys."""

from __future__ import annotations

from typing import Any

import pytest

from pykata.domain.config import (
    Config,
    build_config,
    key_info,
    keys,
    merge,
    parse_toml,
    to_document,
)
from pykata.domain.errors import ConfigError


def _qemu(**values: Any) -> dict[str, Any]:
    return {"hypervisor": {"qemu": values}}


def test_no_documents_gives_the_model_defaults() -> None:
    cfg = build_config([])
    assert cfg == Config()
    assert cfg.hypervisor.default_memory == 2048
    assert cfg.hypervisor.default_vcpus == 1.0
    assert cfg.agent.transport == "auto"
    assert cfg.runtime.state_dir == "/run/pykata"
    assert cfg.image.dir == "/var/lib/pykata"
    assert cfg.warnings == ()


@pytest.mark.parametrize(
    ("dotted", "default"),
    [
        ("hypervisor.qemu.default_maxvcpus", 0),
        ("hypervisor.qemu.default_maxmemory", 0),
        ("hypervisor.qemu.memory_slots", 10),
        ("hypervisor.qemu.enable_virtio_mem", False),
        ("hypervisor.qemu.enable_numa", False),
        ("hypervisor.qemu.numa_mapping", ()),
        ("hypervisor.qemu.enable_hugepages", False),
        ("hypervisor.qemu.enable_annotations", ()),
        ("hypervisor.qemu.valid_hypervisor_paths", ()),
        ("hypervisor.qemu.valid_virtio_fs_daemon_paths", ()),
        ("runtime.enable_vcpus_pinning", False),
        ("runtime.static_sandbox_resource_mgmt", False),
        ("runtime.sandbox_cgroup_only", False),
    ],
)
def test_kata_keys_have_katas_defaults(dotted: str, default: object) -> None:
    assert key_info(dotted).default == default
    assert not key_info(dotted).spec.pykata


def test_pykata_keys_are_marked() -> None:
    own = {k.dotted for k in keys() if k.spec.pykata}
    assert {"hypervisor.qemu.accel", "hypervisor.qemu.tcg_tb_size", "agent.pykata.transport",
            "runtime.state_dir", "image.dir"} <= own
    assert "hypervisor.qemu.default_memory" not in own


def test_merge_tables_per_key_and_replaces_arrays() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    over = {"a": {"y": [3]}, "b": 2}
    assert merge(base, over) == {"a": {"x": 1, "y": [3]}, "b": 2}


def test_later_documents_win_and_arrays_become_tuples() -> None:
    cfg = build_config([("a", _qemu(default_memory=512, numa_mapping=["0"])),
                        ("b", _qemu(numa_mapping=["0", "0"], enable_numa=True))])
    assert cfg.hypervisor.default_memory == 512
    assert cfg.hypervisor.numa_mapping == ("0", "0")
    assert cfg.sources == ("a", "b")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (_qemu(default_memory="big"), "default_memory = 'big': expected an integer"),
        (_qemu(default_memory=-5), "default_memory = -5: must be at least 64"),
        (_qemu(default_memory=8), "at least 64"),
        (_qemu(default_memory=2048.0), "expected an integer"),
        (_qemu(accel="xen"), "one of auto, kvm, tcg"),
        (_qemu(default_vcpus=True), "default_vcpus = True: expected a number"),
        (_qemu(default_vcpus=0), "must be more than 0"),
        (_qemu(default_vcpus=float("nan")), "finite"),
        (_qemu(default_maxvcpus=241), "at most 240"),
        (_qemu(memory_slots=0), "at least 1"),
        (_qemu(enable_numa="yes"), "expected a boolean"),
        (_qemu(path=[]), "path = \\[\\]: expected a string"),
        (_qemu(numa_mapping=["x"]), "numa_mapping = \\['x'\\]: entry 'x'"),
        (_qemu(numa_mapping=["1-0"]), "entry '1-0': range '1-0' runs backwards"),
        (_qemu(numa_mapping=[""]), "entry '': names no host NUMA node"),
        (_qemu(numa_mapping="0"), "expected an array of strings"),
        (_qemu(numa_mapping=[0]), "expected an array of strings"),
        (_qemu(enable_annotations=["("]), "entry '\\(': not a regular expression"),
        (_qemu(valid_hypervisor_paths=["qemu*"]), "entry 'qemu\\*': must be an absolute"),
        (_qemu(path="qemu"), "path = 'qemu': must be an absolute path"),
        (_qemu(kernel="\0"), "NUL"),
        (_qemu(shared_fs="virtio-9p"), "one of virtio-fs"),
        (_qemu(machine_type="q35,accel=kvm"), "plain name"),
        ({"agent": {"pykata": {"transport": "tcp"}}}, "transport = 'tcp'"),
        ({"agent": {"pykata": {"dial_timeout": 601}}}, "at most 600"),
        ({"runtime": {"create_container_timeout": 0}}, "at least 1"),
        ({"runtime": {"state_dir": "run"}}, "absolute"),
        ({"hypervisor": {"qemu": 5}}, "hypervisor.qemu = 5: must be a table"),
        ({"runtime": []}, "runtime = \\[\\]: must be a table"),
    ],
    ids=["wrong-type", "negative-memory", "too-small", "float-for-int", "bad-choice",
         "bool-is-not-number", "zero-vcpus", "nan", "too-many-vcpus", "no-slots", "bool-type",
         "array-for-string", "numa-x", "numa-backwards", "numa-empty", "numa-not-array",
         "numa-not-strings",
         "bad-regex", "relative-glob", "relative-path", "nul", "9p", "machine-options",
         "bad-transport", "long-dial", "zero-timeout", "relative-state-dir", "section-scalar",
         "section-array"],
)
def test_bad_values_name_file_key_and_value(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        build_config([("/etc/x.toml", override)])
    assert str(err.value).startswith("/etc/x.toml: ")


def test_error_names_the_document_that_set_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        build_config([("main.toml", _qemu(default_memory=1024)),
                      ("config.d/10.toml", _qemu(default_memory=1))])
    assert err.value.source == "config.d/10.toml"
    assert err.value.key == "hypervisor.qemu.default_memory"
    assert err.value.value == 1


def test_unknown_keys_warn_with_a_suggestion() -> None:
    cfg = build_config([("f.toml", {**_qemu(defualt_memory=1), "bogus": {}, "top": 1})])
    assert cfg.warnings == (
        "f.toml: unknown key hypervisor.qemu.defualt_memory ignored "
        "(did you mean default_memory?)",
        "f.toml: [bogus] ignored: unknown section",
        "f.toml: unknown key top ignored",
    )


def test_kata_configuration_loads_with_named_warnings() -> None:
    kata = {"hypervisor": {"qemu": {"block_device_driver": "virtio-scsi", "default_vcpus": 1},
                           "clh": {"path": "/x"}},
            "agent": {"kata": {"dial_timeout": 45}},
            "runtime": {"enable_debug": True, "enable_vcpus_pinning": True},
            "factory": {"enable_template": False, "vm_cache_number": 2}}
    cfg = build_config([("kata.toml", kata)])
    assert cfg.runtime.enable_vcpus_pinning is True
    assert cfg.warnings == (
        "kata.toml: hypervisor.qemu.block_device_driver ignored: a Kata key pykata does not "
        "implement",
        "kata.toml: [hypervisor.clh] ignored: pykata runs QEMU only ([hypervisor.qemu])",
        "kata.toml: [agent.kata] ignored: pykata's agent is configured in [agent.pykata]",
        "kata.toml: runtime.enable_debug ignored: a Kata key pykata does not implement",
        "kata.toml: factory.vm_cache_number ignored: a Kata key pykata does not implement",
    )


def test_fractional_vcpus_accepted_and_ints_become_floats() -> None:
    assert build_config([("f", _qemu(default_vcpus=1.5))]).hypervisor.default_vcpus == 1.5
    vcpus = build_config([("f", _qemu(default_vcpus=2))]).hypervisor.default_vcpus
    assert vcpus == 2.0 and isinstance(vcpus, float)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"default_vcpus": 3, "default_maxvcpus": 2}, "more than default_maxvcpus = 2"),
        ({"default_vcpus": 2.5, "default_maxvcpus": 2}, "more than default_maxvcpus = 2"),
        ({"default_memory": 4096, "default_maxmemory": 2048}, "more than default_maxmemory"),
    ],
    ids=["vcpus", "fractional-vcpus-round-up", "memory"],
)
def test_contradictions_between_keys(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        build_config([("f.toml", _qemu(**values))])
    assert err.value.source == "f.toml"


def test_zero_maximums_mean_the_host_and_never_conflict() -> None:
    cfg = build_config([("f", _qemu(default_vcpus=8, default_memory=65536))])
    assert cfg.hypervisor.default_maxvcpus == 0


def test_numa_mapping_without_enable_numa_warns() -> None:
    cfg = build_config([("f.toml", _qemu(numa_mapping=["0", "1"]))])
    assert cfg.warnings == ("f.toml: hypervisor.qemu.numa_mapping is ignored: "
                            "enable_numa is false",)


def test_invalid_toml_names_file() -> None:
    with pytest.raises(ConfigError, match="bad.toml: .*not valid TOML"):
        parse_toml("[hypervisor", "bad.toml")


def test_to_document_round_trips() -> None:
    cfg = build_config([("f", _qemu(numa_mapping=["0"], enable_numa=True))])
    assert build_config([("again", to_document(cfg))]) == cfg


def test_every_key_has_a_documented_type_and_a_valid_default() -> None:
    for info in keys():
        assert info.spec.doc.endswith("."), info.dotted
        document: dict[str, Any] = {}
        table = document
        for part in info.table:
            table = table.setdefault(part, {})
        table[info.name] = list(info.default) if isinstance(info.default, tuple) else info.default
        build_config([("d", document)])  # the default passes its own validation
