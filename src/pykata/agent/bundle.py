"""What the agent changes in an OCI spec or exec process before handing it to the runtime.

Pure: JSON bytes in, validated document out, errors naming the container and the key.
- root.path: absolute paths are used as sent (the host sends the guest path); a relative
  path is taken under <shared_root>/<container id>/, where the host's rootfs appears.
- process.terminal passes through (must be a boolean): true gives the process a pty
  (`pykata.agent.terminal`), false or absent three pipes.
- linux.namespaces: a path naming another container's namespace (the host's
  `container_ns_path`) becomes that container's init's /proc/<pid>/ns file.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from typing import Any

from pykata.domain.contract import NS_FILES, parse_container_ns_path
from pykata.domain.errors import SpecError


def _load(source: str, data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise SpecError(source, "<document>", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SpecError(source, "<document>", f"must be a JSON object, got {type(doc).__name__}")
    return doc


def check_process(source: str, process: object) -> dict[str, Any]:
    if not isinstance(process, dict):
        raise SpecError(source, "process", "must be an object")
    args = process.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise SpecError(source, "process.args", f"must be a non-empty list of strings: {args!r}")
    if not isinstance(process.get("terminal", False), bool):
        raise SpecError(source, "process.terminal",
                        f"must be true or false: {process['terminal']!r}")
    return process


def wants_terminal(process: dict[str, Any]) -> bool:
    """For a process that passed `check_process`."""
    return process.get("terminal") is True


def prepare_spec(container_id: str, data: bytes, shared_root: str) -> dict[str, Any]:
    source = f"container {container_id!r} spec"
    spec = _load(source, data)
    check_process(source, spec.get("process"))
    root = spec.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("path"), str) or not root["path"]:
        raise SpecError(source, "root.path", "must be a non-empty string")
    if not posixpath.isabs(root["path"]):
        root["path"] = posixpath.join(shared_root, container_id, root["path"])
    return spec


def prepare_process(container_id: str, exec_id: str, data: bytes) -> dict[str, Any]:
    source = f"exec {exec_id!r} in container {container_id!r}"
    return check_process(source, _load(source, data))


def resolve_namespaces(source: str, spec: dict[str, Any], init_pid: Callable[[str], int]) -> None:
    """Points each namespace that names a container's (`container_ns_path`) at that
    container's init; `init_pid(container id)` raises when it has none running."""
    linux = spec.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, dict) else None
    for ns in namespaces if isinstance(namespaces, list) else ():
        path = ns.get("path") if isinstance(ns, dict) else None
        ref = parse_container_ns_path(path) if isinstance(path, str) else None
        if ref is None:
            continue
        cid, kind = ref
        if kind != ns.get("type"):
            raise SpecError(source, "linux.namespaces",
                            f"{path!r} is a {kind} namespace, named for {ns.get('type')!r}")
        ns["path"] = f"/proc/{init_pid(cid)}/ns/{NS_FILES[kind]}"
