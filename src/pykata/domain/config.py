"""The configuration model: Kata-style TOML sections parsed into frozen dataclasses.

Parses text and merges documents; never opens a file (the host layer reads them). Later
documents override earlier ones: tables merge per key, scalars and arrays are replaced.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pykata.domain.errors import ConfigError


@dataclass(frozen=True)
class HypervisorConfig:
    path: str
    kernel: str
    initrd: str
    machine_type: str
    machine_accelerators: str
    accel: str
    tcg_tb_size: int
    default_vcpus: float
    default_memory: int
    kernel_params: str
    shared_fs: str
    virtio_fs_daemon: str
    virtio_fs_cache: str


@dataclass(frozen=True)
class AgentConfig:
    dial_timeout: float
    transport: str


@dataclass(frozen=True)
class RuntimeConfig:
    state_dir: str


@dataclass(frozen=True)
class ImageConfig:
    dir: str


@dataclass(frozen=True)
class Config:
    hypervisor: HypervisorConfig
    agent: AgentConfig
    runtime: RuntimeConfig
    image: ImageConfig
    warnings: tuple[str, ...] = field(default=(), compare=False)


# Where each section lives in the TOML document, and the allowed values of enum-like keys.
_SECTIONS: dict[str, tuple[tuple[str, ...], type]] = {
    "hypervisor": (("hypervisor", "qemu"), HypervisorConfig),
    "agent": (("agent", "pykata"), AgentConfig),
    "runtime": (("runtime",), RuntimeConfig),
    "image": (("image",), ImageConfig),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "hypervisor.qemu.accel": ("auto", "kvm", "tcg"),
    "hypervisor.qemu.shared_fs": ("virtio-fs",),
    "hypervisor.qemu.virtio_fs_cache": ("auto", "always", "never"),
    "agent.pykata.transport": ("auto", "virtio-serial", "vsock"),
}
_MINIMUM: dict[str, float] = {
    "hypervisor.qemu.default_vcpus": 0.001,
    "hypervisor.qemu.default_memory": 64,
    "hypervisor.qemu.tcg_tb_size": 1,
    "agent.pykata.dial_timeout": 0.1,
}


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(file)", "...", f"not valid TOML: {exc}") from exc


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge per key; scalars and arrays are replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(documents: Iterable[tuple[str, Mapping[str, Any]]]) -> Config:
    """Merge (source, document) pairs in order and validate the result.

    The first document must be the packaged defaults, which define every key.
    """
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, doc in documents:
        merged = merge(merged, doc)
        _record_origin(doc, source, (), origin)
    warnings: list[str] = []
    sections = {
        name: _build_section(merged, path, cls, origin, warnings)
        for name, (path, cls) in _SECTIONS.items()
    }
    known_tops = {path[0] for path, _ in _SECTIONS.values()}
    for top in merged:
        if top not in known_tops:
            warnings.append(f"{origin.get(top, '?')}: unknown section [{top}] ignored")
    return Config(**sections, warnings=tuple(warnings))


def _record_origin(
    doc: Mapping[str, Any], source: str, prefix: tuple[str, ...], origin: dict[str, str]
) -> None:
    for key, value in doc.items():
        path = (*prefix, key)
        origin[".".join(path)] = source
        if isinstance(value, Mapping):
            _record_origin(value, source, path, origin)


def _build_section(
    merged: Mapping[str, Any],
    path: tuple[str, ...],
    cls: type,
    origin: Mapping[str, str],
    warnings: list[str],
) -> Any:
    table: Any = merged
    for part in path:
        table = table.get(part, {}) if isinstance(table, Mapping) else {}
    prefix = ".".join(path)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields and not isinstance(table[key], Mapping):
            warnings.append(f"{origin.get(f'{prefix}.{key}', '?')}: unknown key {prefix}.{key}")
    values = {}
    for name, fld in fields.items():
        dotted = f"{prefix}.{name}"
        values[name] = _check_value(dotted, table.get(name), fld.type, origin.get(dotted, "?"))
    return cls(**values)


_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "float": (int, float)}


def _check_value(dotted: str, value: object, type_name: object, source: str) -> object:
    expected = _TYPES[str(type_name)]
    if value is None:
        raise ConfigError(source, dotted, value, "missing")
    if isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(source, dotted, value, f"expected {type_name}")
    if dotted in _CHOICES and value not in _CHOICES[dotted]:
        raise ConfigError(source, dotted, value, f"must be one of {', '.join(_CHOICES[dotted])}")
    if dotted in _MINIMUM and isinstance(value, int | float) and value < _MINIMUM[dotted]:
        raise ConfigError(source, dotted, value, f"must be at least {_MINIMUM[dotted]}")
    return float(value) if type_name == "float" and isinstance(value, int | float) else value
