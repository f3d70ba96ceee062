"""What `pykata install containerd` writes: pykata's CRI runtime entry in a drop-in file, and
the `imports` entry containerd's main config needs to read that file.

Pure: files come in as text and go out as text (pykata.host.containerd_files reads and
writes them). Every text it returns has been parsed back with tomllib and compared with
what was meant. What containerd 1.6 does with its files (services/server/config):

- It reads the main file, then each of its `imports` in order (an entry with `*` is a glob,
  its matches sorted; a relative glob is taken from containerd's working directory), then
  the imports of those; each file once.
- Later files override top-level scalars and append to arrays, but a plugin's section in a
  later file replaces that plugin's whole section. A drop-in holding only pykata's runtime
  under [plugins."io.containerd.grpc.v1.cri"] would reset every other CRI setting (Debian's
  own config.toml sets `cni.bin_dir` there), so the drop-in carries the CRI section of the
  last file read before it.
- Plugins are named by URI only in `version = 2` files; version 3 is containerd 2's format.
"""

from __future__ import annotations

import posixpath
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from pykata.domain.config import merge
from pykata.domain.errors import InstallError
from pykata.domain.toml_text import append_to_array, insert_top_level, quote, render, top_level

CRI = "io.containerd.grpc.v1.cri"
RUNTIME = "pykata"
RUNTIME_TYPE = "io.containerd.pykata.v2"
ANNOTATIONS = ("io.katacontainers.*",)
CONTAINERD_CONFIG = "/etc/containerd/config.toml"

RUNC = {"runtime_type": "io.containerd.runc.v2"}  # containerd's built-in runtime

_SNIPPET_HEADER = """\
# pykata as a runtime of containerd 1.6's CRI plugin (Kubernetes), from
# `pykata install containerd`. containerd merges the files its config's `imports` name
# into it: `pykata install containerd --write` writes this to
# {dropin} as such a file (with what containerd 1.6
# needs beside it: see there) and imports it. Or paste it into
# {main} below its other tables. Restart containerd after either.
"""
_DROPIN_HEADER = """\
# pykata as a runtime of containerd 1.6's CRI plugin (Kubernetes), written by
# `pykata install containerd --write`: run that again rather than editing this file.
#
# containerd reads {main}, then the files its `imports` name
# ({entry}), and merges them. But containerd 1.6 takes each plugin's
# section whole from the last file that has one, and forgets its built-in runc runtime once
# a config names any runtime. So this file holds the whole [plugins."{cri}"]
# section: {what}, a runc runtime where they have none, and pykata's.
# After changing those settings, run `pykata install containerd --write` again.
"""
_DEVICES = """\
#
# privileged_without_host_devices: a privileged pod's VM gets none of the host's devices.

"""
_RUNC_NOTE = """
# containerd 1.6 forgets its built-in runc runtime once a config names any runtime: where
# the config has no [plugins."{cri}".containerd.runtimes.runc] table, add
# this one too (--write does):
#
{runc}"""
_RUNTIME_CLASS = """
# Kubernetes: apply this RuntimeClass (kubectl apply -f), then set
# `runtimeClassName: {runtime}` in a pod's spec. `pykata plan --pod POD.yaml` prints the
# VM's share for an optional `overhead.podFixed`.
#
# apiVersion: node.k8s.io/v1
# kind: RuntimeClass
# metadata:
#   name: {runtime}
# handler: {runtime}
"""


def default_dropin(main_config: str) -> str:
    return posixpath.join(posixpath.dirname(main_config), "conf.d", f"{RUNTIME}.toml")


def runtime_entry(config_path: str) -> dict[str, Any]:
    return {"runtime_type": RUNTIME_TYPE, "pod_annotations": list(ANNOTATIONS),
            "container_annotations": list(ANNOTATIONS),
            "privileged_without_host_devices": True,
            "options": {"ConfigPath": config_path}}


def cri_section(config_path: str, carried: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole CRI section for a drop-in: `carried`'s settings, containerd's runc runtime
    where they name no runtime for `default_runtime_name` "runc", and pykata's."""
    base = carried or {}
    ctd = _table(base, "containerd") or {}
    default = ctd.get("default_runtime_name", "runc")
    runc = default == "runc" and default not in (_table(ctd, "runtimes") or {})
    runtimes = {"runc": RUNC} if runc else {}
    runtimes[RUNTIME] = runtime_entry(config_path)
    return merge(base, {"containerd": {"runtimes": runtimes}})


def render_snippet(config_path: str, main_config: str, dropin: str) -> str:
    """What `pykata install containerd` prints, to paste into containerd's config: pykata's
    runtime, then containerd's runc runtime and the RuntimeClass as comments."""
    runtimes = ("plugins", CRI, "containerd", "runtimes")
    runc = "".join(f"# {line}".rstrip() + "\n"
                   for line in render(RUNC, (*runtimes, "runc")).splitlines())
    text = (_SNIPPET_HEADER.format(main=main_config, dropin=dropin) + _DEVICES
            + render(runtime_entry(config_path), (*runtimes, RUNTIME))
            + _RUNC_NOTE.format(cri=CRI, runc=runc) + _RUNTIME_CLASS.format(runtime=RUNTIME))
    _check_reads_back(text, "the snippet", {"containerd": {"runtimes": {
        RUNTIME: runtime_entry(config_path)}}})
    return text


def render_dropin(config_path: str, main_config: str, dropin: str,
                  carried: Mapping[str, Any] | None = None, source: str = "") -> str:
    """The drop-in file: comments saying how containerd reads it, the CRI section (carrying
    `carried`, read from `source`), then the RuntimeClass as comments."""
    section = cri_section(config_path, carried)
    try:
        body = render(section, ("plugins", CRI))
    except TypeError as exc:
        raise InstallError(source, f'[plugins."{CRI}"]: {exc}') from exc
    what = (f"the settings of {source}" if carried
            else "containerd's defaults (no file read before this one has that section)")
    header = _DROPIN_HEADER.format(main=main_config, entry=quote(import_entry(dropin)),
                                   cri=CRI, what=what)
    text = header + _DEVICES + body + _RUNTIME_CLASS.format(runtime=RUNTIME)
    _check_reads_back(text, dropin, section)
    return text


def _check_reads_back(text: str, source: str, section: Mapping[str, Any]) -> None:
    if _parse(text, source) != {"plugins": {CRI: section}}:
        raise InstallError(source, "the rendered text does not read back as meant")


@dataclass(frozen=True)
class DropinPlan:
    path: str
    text: str
    carried_from: str | None  # the file whose CRI settings the drop-in carries


def plan_dropin(config_path: str, main_config: str, dropin: str,
                loaded: Sequence[tuple[str, str | None]]) -> DropinPlan:
    """The drop-in, given the files containerd reads in its order with their text (None:
    missing), the drop-in among them (its own text is not looked at)."""
    carried: Mapping[str, Any] | None = None
    source: str | None = None
    seen = False
    for path, text in loaded:
        if path == dropin:
            seen = True
            continue
        section = None if text is None else _table(_table(_parse(text, path), "plugins"), CRI)
        if section is None:
            continue
        if seen:
            raise InstallError(path, f'containerd reads it after {dropin} and takes '
                               f'[plugins."{CRI}"] from it as a whole, dropping pykata\'s '
                               "runtime: add the tables `pykata install containerd` prints to "
                               "this file instead")
        carried, source = section, path
    if not seen:
        raise InstallError(main_config, f"containerd would not read {dropin}")
    text = render_dropin(config_path, main_config, dropin, carried, source or "")
    return DropinPlan(dropin, text, source)


@dataclass(frozen=True)
class MainPlan:
    path: str
    text: str | None  # the file's new text; None: leave it as it is
    created: bool
    imports: tuple[str, ...]  # its imports afterwards
    added: str | None  # the import entry added


def import_entry(dropin: str) -> str:
    """What to import: every *.toml beside the drop-in, so other drop-ins can join it."""
    directory, name = posixpath.split(dropin)
    return posixpath.join(directory, "*.toml") if name.endswith(".toml") else dropin


def covers(entry: str, main_config: str, path: str) -> bool:
    """Whether containerd reads `path` for the `imports` entry `entry` of `main_config`."""
    if "*" not in entry:
        full = posixpath.join(posixpath.dirname(main_config), entry)
        return posixpath.normpath(full) == posixpath.normpath(path)
    if not posixpath.isabs(entry):
        return False  # relative to containerd's working directory, which is not known here
    pattern = posixpath.normpath(entry).split("/")
    parts = posixpath.normpath(path).split("/")
    if len(pattern) != len(parts):
        return False
    return all(fnmatchcase(part, glob.replace("[^", "[!"))  # Go's negation is fnmatch's [!
               for glob, part in zip(pattern, parts, strict=True))


def load_order(main_config: str, imports: Sequence[str], dropin: str,
               matches: Mapping[str, Sequence[str]]) -> list[str]:
    """The files containerd reads, in its order: the main config, then each import, a glob's
    `matches` sorted with the drop-in among them even before it exists. Imports of imported
    files are not followed."""
    order = [main_config]
    for entry in imports:
        if "*" in entry:
            found = set(matches.get(entry, ()))
            found |= {dropin} if covers(entry, main_config, dropin) else set()
            paths = sorted(found)
        else:
            paths = [posixpath.normpath(posixpath.join(posixpath.dirname(main_config), entry))]
        order += [p for p in paths if p not in order]
    return order


def plan_main_config(path: str, text: str | None, dropin: str) -> MainPlan:
    """containerd's main config, importing the drop-in: created when missing (`text` None),
    unchanged when an import already covers it, else with the import added."""
    entry = import_entry(dropin)
    if text is None:
        new = f"version = 2\nimports = [{quote(entry)}]\n"
        return MainPlan(path, new, True, (entry,), entry)
    doc = _parse(text, path)
    line = f"imports = [{quote(entry)}]"
    if not doc:  # empty, or comments only: nothing depends on the version yet
        return _checked(path, insert_top_level(text, f"version = 2\n{line}"),
                        {"version": 2, "imports": [entry]})
    _check_version(path, doc.get("version", 1))
    imports = doc.get("imports", [])
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise InstallError(path, f"imports = {imports!r}: expected an array of strings")
    if any(covers(i, path, dropin) for i in imports):
        return MainPlan(path, None, False, tuple(imports), None)
    if "imports" not in doc:
        new = insert_top_level(text, line)
    else:
        found = [s for s in top_level(text) if s.kind == "keyval" and s.key == "imports"]
        try:
            new = append_to_array(text, found[0], quote(entry)) if found else ""
        except ValueError:
            new = ""
    return _checked(path, new, {**doc, "imports": [*imports, entry]})


def _checked(path: str, new: str, meant: Mapping[str, Any]) -> MainPlan:
    """The plan to write `new`, once it reads back as `meant`."""
    if _parse_or_none(new) != meant:
        entry = meant["imports"][-1]
        raise InstallError(path, f"could not add {entry!r} to its imports safely: "
                           "add it by hand")
    return MainPlan(path, new, False, tuple(meant["imports"]), meant["imports"][-1])


def _check_version(path: str, version: object) -> None:
    if version == 2:
        return
    if version == 1:
        why = ("a version 1 config (no `version = 2`), where plugins have short names: "
               "convert it to version 2 first")
    else:
        why = (f"version = {version!r}: pykata installs into containerd 1.6's version 2 "
               "config only")
    raise InstallError(path, why)


def _table(doc: Mapping[str, Any] | None, name: str) -> Mapping[str, Any] | None:
    """doc[name] where it is a table, else None."""
    value = None if doc is None else doc.get(name)
    return value if isinstance(value, Mapping) else None


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InstallError(source, f"not valid TOML ({exc}): left as it is") from exc


def _parse_or_none(text: str) -> dict[str, Any] | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
