"""Per-pod overrides from OCI annotations, and the rules that refuse them.

`io.katacontainers.config.<section>.<name>` sets the key whose model entry declares that
annotation name. A hypervisor key must also match `enable_annotations` as a whole name
(Kata matches unanchored, so `path` would enable `jailer_path`); a path-valued key's value
must be a normalised absolute path matching the key's `valid_*_paths` globs, where `*`
never crosses a `/`. Anything refused fails the whole set, naming every refused
annotation: nothing is applied in part and nothing is dropped silently. Pure.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from pykata.domain.config import Config, KeyInfo, check_config, check_value, keys
from pykata.domain.errors import AnnotationError, ConfigError, SpecError

PREFIX = "io.katacontainers.config."
MAX_NAME_LEN = 256
MAX_VALUE_LEN = 4096
# Kata appends an annotated kernel_params to the configured ones instead of replacing them.
_APPENDS = frozenset({"hypervisor.qemu.kernel_params"})
# Go's strconv.ParseBool, which Kata uses for boolean annotations.
_BOOLS = {**dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
          **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False)}
_INT = re.compile(r"[+-]?[0-9]{1,19}\Z")
_FLOAT = re.compile(r"[+-]?([0-9]{1,19}(\.[0-9]{0,19})?|\.[0-9]{1,19})([eE][+-]?[0-9]{1,3})?\Z")


class _Refused(Exception):
    def __init__(self, why: str) -> None:
        self.why = why
# Other projects' names for a key, accepted as if written in pykata's form.
ALIASES = {"io.katacontainers.enable_vcpus_pinning": PREFIX + "runtime.enable_vcpus_pinning"}


def parse_annotations(doc: Mapping[str, Any], source: str) -> dict[str, str]:
    """The OCI spec's `annotations` (a map of strings), or SpecError."""
    value = doc.get("annotations")
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SpecError(source, "annotations", "must be an object of string values")
    return dict(value)


def apply_annotations(cfg: Config, annotations: Mapping[str, str]) -> Config:
    """`cfg` with every `io.katacontainers.config.*` annotation applied, or AnnotationError.
    Other annotations are not configuration and are left alone."""
    annotations = {ALIASES.get(n, n): v for n, v in annotations.items()}
    refused: list[tuple[str, str, str]] = []
    changes: dict[str, dict[str, object]] = {}
    applied: dict[str, str] = {}  # dotted key -> annotation name
    for name in sorted(n for n in annotations if n.startswith(PREFIX)):
        try:
            info, value = _override(cfg, name, annotations[name])
        except _Refused as exc:
            refused.append((name, annotations[name], exc.why))
            continue
        changes.setdefault(info.section, {})[info.name] = value
        applied[info.dotted] = name
    if refused:
        raise AnnotationError(refused)
    if not changes:
        return cfg
    sections = {s: dataclasses.replace(getattr(cfg, s), **c) for s, c in changes.items()}
    out = dataclasses.replace(cfg, **sections)
    try:
        warnings = check_config(out, lambda k: f"annotation {applied[k]}" if k in applied
                                else "configuration")
    except ConfigError as exc:
        culprit = applied.get(exc.key) or ", ".join(sorted(applied.values()))
        raise AnnotationError([(culprit, annotations.get(culprit, "..."),
                                f"{exc.key} = {exc.value!r}: {exc.why}")]) from exc
    new = tuple(w for w in warnings if w not in cfg.warnings)
    return dataclasses.replace(out, warnings=cfg.warnings + new)


def _override(cfg: Config, name: str, raw: str) -> tuple[KeyInfo, object]:
    section, _, key = name[len(PREFIX):].partition(".")
    if len(name) > MAX_NAME_LEN or len(raw) > MAX_VALUE_LEN:
        raise _Refused(f"longer than {MAX_NAME_LEN} (name) or {MAX_VALUE_LEN} (value) "
                       "characters")
    if section not in ("hypervisor", "runtime", "agent") or not key:
        raise _Refused(f"not a pykata annotation: expected {PREFIX}"
                       "{hypervisor,runtime,agent}.<key>")
    if section == "hypervisor":
        patterns = cfg.hypervisor.enable_annotations
        if not any(re.fullmatch(p, key) for p in patterns):
            raise _Refused(f"not enabled: no entry of hypervisor.qemu.enable_annotations "
                           f"{list(patterns)} matches {key!r} as a whole")
    info = _annotatable().get((section, key))
    if info is None:
        raise _Refused(f"no {section} key {key!r} may be set by annotation")
    value = _typed(info, raw)
    if info.spec.path_globs:
        _check_path(cfg, info, raw)
    current = getattr(getattr(cfg, info.section), info.name)
    if info.dotted in _APPENDS and current:
        value = f"{current} {value}"
    try:
        return info, check_value(info, value, f"annotation {name}")
    except ConfigError as exc:
        raise _Refused(exc.why) from None


@functools.cache
def _annotatable() -> dict[tuple[str, str], KeyInfo]:
    return {(k.section, k.spec.annotation): k for k in keys() if k.spec.annotation}


def _typed(info: KeyInfo, raw: str) -> object:
    """The annotation's text as a value of the key's type."""
    if info.type == "bool":
        if raw not in _BOOLS:
            raise _Refused("expected true or false")
        return _BOOLS[raw]
    if info.type == "int":
        if not _INT.match(raw):
            raise _Refused("expected an integer")
        return int(raw)
    if info.type == "float":
        if not _FLOAT.match(raw):
            raise _Refused("expected a number")
        return float(raw)
    if info.type == "tuple[str, ...]":
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Refused('expected a JSON array of strings, e.g. ["a", "b"]')
        return value
    return raw


def _check_path(cfg: Config, info: KeyInfo, value: str) -> None:
    assert info.spec.path_globs is not None
    globs: tuple[str, ...] = getattr(getattr(cfg, info.section), info.spec.path_globs)
    where = ".".join((*info.table, info.spec.path_globs))
    if not globs:
        raise _Refused(f"path not allowed: {where} is empty")
    if not is_normalised_path(value):
        raise _Refused("must be a normalised absolute path (no '.', '..', '//' or trailing '/')")
    if not any(path_matches(glob, value) for glob in globs):
        raise _Refused(f"path not allowed: matches no glob in {where} {list(globs)}")


def is_normalised_path(path: str) -> bool:
    parts = path.split("/")
    return path.startswith("/") and all(p not in ("", ".", "..") for p in parts[1:])


def path_matches(glob: str, path: str) -> bool:
    """Go's filepath.Match, which Kata uses: `*` and `?` stay within one path component."""
    gparts, pparts = glob.split("/"), path.split("/")
    return len(gparts) == len(pparts) and all(
        fnmatch.fnmatchcase(p, g) for g, p in zip(gparts, pparts, strict=True))
