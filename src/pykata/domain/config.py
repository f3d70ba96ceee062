"""Build a Config from parsed TOML documents: merge, validate, warn about unknown keys.

The keys themselves live in `config_model`. Takes text or parsed documents, never opens
a file (pykata.host reads them). Later documents override earlier ones: tables merge per
key, scalars and arrays are replaced. Wrong types and out-of-range values are ConfigErrors
naming the document, key and value; unknown keys are warnings (a typo must not pass
silently, and a Kata configuration carries keys pykata does not implement).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pykata.domain.config_model import (
    CLASSES,
    SECTIONS,
    AgentConfig,
    Config,
    HypervisorConfig,
    ImageConfig,
    KeyInfo,
    RuntimeConfig,
    key_info,
    keys,
)
from pykata.domain.errors import ConfigError

__all__ = ["KATA_ONLY_KEYS", "KATA_SECTIONS", "SECTIONS", "AgentConfig", "Config",
           "HypervisorConfig", "ImageConfig", "KeyInfo", "RuntimeConfig", "build_config",
           "check_config", "check_value", "key_info", "keys", "merge", "parse_toml",
           "to_document"]

# Kata keys pykata does not implement: a Kata configuration may carry them, so they are
# named as such rather than reported as typos.
KATA_ONLY_KEYS = {
    "hypervisor.qemu": frozenset({
        "firmware", "firmware_volume", "confidential_guest", "rootless",
        "seccompsandbox", "default_bridges", "memory_offset", "disable_block_device_use",
        "virtio_fs_cache_size", "virtio_fs_queue_size", "virtio_fs_extra_args",
        "block_device_driver", "block_device_aio", "block_device_cache_set",
        "block_device_cache_direct", "block_device_cache_noflush", "enable_iothreads",
        "indep_iothreads", "enable_vhost_user_store", "vhost_user_store_path",
        "valid_vhost_user_store_paths", "vhost_user_reconnect_timeout_sec",
        "file_mem_backend", "valid_file_mem_backends", "pflashes", "entropy_source",
        "valid_entropy_sources", "enable_debug", "disable_nesting_checks", "msize_9p",
        "disable_image_nvdimm", "hot_plug_vfio", "cold_plug_vfio", "pcie_root_port",
        "pcie_switch_port", "disable_vhost_net", "rx_rate_limiter_max_rate",
        "tx_rate_limiter_max_rate", "guest_hook_path", "guest_memory_dump_path",
        "guest_memory_dump_paging", "enable_guest_swap", "use_legacy_serial",
        "disable_selinux", "disable_guest_selinux", "enable_iommu", "enable_iommu_platform",
        "jailer_path", "valid_jailer_paths", "ctlpath", "valid_ctlpaths",
        "kernel_verity_params", "sgx_epc_size"}),
    "factory": frozenset({"vm_cache_number", "vm_cache_endpoint"}),
    "runtime": frozenset({
        "enable_debug", "disable_guest_seccomp", "enable_tracing", "jaeger_endpoint",
        "jaeger_user", "jaeger_password", "disable_new_netns", "sandbox_bind_mounts",
        "vfio_mode", "disable_guest_empty_dir", "experimental", "enable_pprof", "dan_conf",
        "guest_selinux_label", "experimental_force_guest_pull",
        "static_sandbox_default_workload_mem", "static_sandbox_default_workload_vcpus"}),
}
KATA_SECTIONS = {
    "agent.kata": "pykata's agent is configured in [agent.pykata]",
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
    """Merge (source, document) pairs in order over the model's defaults, and validate."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    sources: list[str] = []
    for source, doc in documents:
        merged = merge(merged, doc)
        _record_origin(doc, source, (), origin)
        sources.append(source)
    values: dict[str, dict[str, object]] = {section: {} for section in SECTIONS}
    for info in keys():
        table = _table(merged, info.table, origin)
        if info.name in table:
            src = origin.get(info.dotted, "?")
            values[info.section][info.name] = check_value(info, table[info.name], src)
    sections: dict[str, Any] = {s: cls(**values[s]) for s, cls in CLASSES.items()}
    cfg = Config(**sections)
    warnings = _unknown_keys(merged, (), origin)
    warnings += check_config(cfg, lambda dotted: origin.get(dotted, "defaults"))
    return dataclasses.replace(cfg, warnings=tuple(warnings), sources=tuple(sources))


def check_value(info: KeyInfo, value: object, source: str) -> object:
    """`value` converted to the key's type (arrays to tuples, integers to float where the
    key is a number), or ConfigError naming source, key and value."""
    why = _type_problem(info.type, value)
    if why is None:
        why = _range_problem(info, value)
    if why is not None:
        raise ConfigError(source, info.dotted, value, why)
    if info.type == "float":
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, list):
        return tuple(value)
    return value


def _type_problem(type_name: str, value: object) -> str | None:
    if type_name == "bool":
        return None if isinstance(value, bool) else "expected a boolean (true or false)"
    if type_name == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else (
            "expected an integer")
    if type_name == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "expected a number"
        return None if math.isfinite(value) else "must be a finite number"
    if type_name == "str" and not isinstance(value, str):
        return "expected a string"  # an array too: it holds no string to check
    items = value if isinstance(value, list) else [value]
    if type_name == "tuple[str, ...]" and not isinstance(value, list):
        return "expected an array of strings"
    for item in items:
        if not isinstance(item, str):
            return "expected a string" if type_name == "str" else "expected an array of strings"
        if "\0" in item:
            return "must not contain a NUL character"
    return None


def _range_problem(info: KeyInfo, value: Any) -> str | None:
    spec = info.spec
    if spec.choices and value not in spec.choices:
        return f"must be one of {', '.join(spec.choices)}"
    if spec.minimum is not None and value < spec.minimum:
        return f"must be at least {spec.minimum:g}"
    if spec.maximum is not None and value > spec.maximum:
        return f"must be at most {spec.maximum:g}"
    if spec.check is not None:
        return spec.check(tuple(value) if isinstance(value, list) else value)
    return None


def check_config(cfg: Config, origin: Callable[[str], str]) -> list[str]:
    """Rules between keys: ConfigError for a contradiction, warnings for what is ignored.
    `origin` names the document that set a dotted key."""
    hv = cfg.hypervisor
    vcpus = math.ceil(hv.default_vcpus)
    if hv.default_maxvcpus and vcpus > hv.default_maxvcpus:
        key = "hypervisor.qemu.default_vcpus"
        raise ConfigError(origin(key), key, hv.default_vcpus,
                          f"more than default_maxvcpus = {hv.default_maxvcpus}")
    if hv.default_maxmemory and hv.default_memory > hv.default_maxmemory:
        key = "hypervisor.qemu.default_memory"
        raise ConfigError(origin(key), key, hv.default_memory,
                          f"more than default_maxmemory = {hv.default_maxmemory}")
    warnings = []
    if hv.numa_mapping and not hv.enable_numa:
        key = "hypervisor.qemu.numa_mapping"
        warnings.append(f"{origin(key)}: {key} is ignored: enable_numa is false")
    return warnings


def to_document(cfg: Config) -> dict[str, Any]:
    """The effective configuration as a TOML-shaped document (arrays as lists)."""
    doc: dict[str, Any] = {}
    for info in keys():
        table = doc
        for part in info.table:
            table = table.setdefault(part, {})
        value = getattr(getattr(cfg, info.section), info.name)
        table[info.name] = list(value) if isinstance(value, tuple) else value
    return doc


def _record_origin(
    doc: Mapping[str, Any], source: str, prefix: tuple[str, ...], origin: dict[str, str]
) -> None:
    for key, value in doc.items():
        path = (*prefix, key)
        origin[".".join(path)] = source
        if isinstance(value, Mapping):
            _record_origin(value, source, path, origin)


def _table(merged: Mapping[str, Any], path: tuple[str, ...],
           origin: Mapping[str, str]) -> Mapping[str, Any]:
    table: Any = merged
    for depth, part in enumerate(path, 1):
        table = table.get(part, {})
        if not isinstance(table, Mapping):
            dotted = ".".join(path[:depth])
            raise ConfigError(origin.get(dotted, "?"), dotted, table, "must be a table")
    return table  # type: ignore[no-any-return]


_TABLES = {table: {k.name for k in keys() if k.table == table} for table in SECTIONS.values()}
_PARENTS = {table[:n] for table in _TABLES for n in range(1, len(table))}


def _unknown_keys(table: Mapping[str, Any], path: tuple[str, ...],
                  origin: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for key, value in table.items():
        sub = (*path, key)
        if sub in _TABLES or sub in _PARENTS:
            if isinstance(value, Mapping):  # a non-table here is an error raised elsewhere
                out += _unknown_keys(value, sub, origin)
        elif key not in _TABLES.get(path, ()):
            out.append(f"{origin.get('.'.join(sub), '?')}: "
                       f"{_unknown_key(path, key, isinstance(value, Mapping))}")
    return out


def _unknown_key(path: tuple[str, ...], key: str, is_table: bool) -> str:
    dotted = ".".join((*path, key))
    if is_table:
        why = KATA_SECTIONS.get(dotted)
        if why is None and path == ("hypervisor",):
            why = "pykata runs QEMU only ([hypervisor.qemu])"
        return f"[{dotted}] ignored: {why or 'unknown section'}"
    if key in KATA_ONLY_KEYS.get(".".join(path), ()):
        return f"{dotted} ignored: a Kata key pykata does not implement"
    known = _TABLES.get(path, set())
    hint = ""
    if known:
        import difflib  # only when there is a typo to explain

        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown key {dotted} ignored{hint}"
