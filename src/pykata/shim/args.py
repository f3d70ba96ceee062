"""The shim's command line and the names it derives from it. Pure: no I/O.

containerd runs the shim binary with Go-style flags (`-namespace NS -address A
-publish-binary B -id ID [-debug] [-bundle B] start|delete`). The socket a shim serves on
is named by a hash of (containerd address, namespace, sandbox id), so every container of
a pod finds its sandbox's shim without asking anyone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pykata.domain.errors import PykataError, UsageError

ACTIONS = ("start", "delete")
_VALUE_FLAGS = ("namespace", "address", "publish-binary", "id", "bundle", "socket")
_BOOL_FLAGS = ("debug", "v")
CONTAINER_TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
MAX_SOCKET_PATH = 106


@dataclass(frozen=True)
class ShimArgs:
    action: str
    namespace: str = ""
    address: str = ""
    publish_binary: str = ""
    id: str = ""
    bundle: str = ""
    debug: bool = False
    version: bool = False


def parse_args(argv: Sequence[str]) -> ShimArgs:
    values: dict[str, str] = {}
    flags: set[str] = set()
    actions: list[str] = []
    items = list(argv)
    while items:
        item = items.pop(0)
        if not item.startswith("-"):
            actions.append(item)
            continue
        name, eq, value = item.lstrip("-").partition("=")
        if name in _BOOL_FLAGS:
            if not eq or value.lower() in ("1", "t", "true"):
                flags.add(name)
        elif name in _VALUE_FLAGS:
            if not eq:
                if not items:
                    raise UsageError(f"flag -{name} needs a value")
                value = items.pop(0)
            values[name] = value
        else:
            raise UsageError(f"unknown flag {item!r}")
    if "v" in flags:
        return ShimArgs(action="", version=True)
    if len(actions) != 1 or actions[0] not in ACTIONS:
        raise UsageError(f"expected one action of {', '.join(ACTIONS)}, got {actions}")
    if not values.get("id"):
        raise UsageError("flag -id is required")
    return ShimArgs(action=actions[0], namespace=values.get("namespace", ""),
                    address=values.get("address", ""),
                    publish_binary=values.get("publish-binary", ""), id=values["id"],
                    bundle=values.get("bundle", ""), debug="debug" in flags)


@dataclass(frozen=True)
class PodRole:
    sandbox_id: str
    is_sandbox: bool     # this task creates the VM
    is_pod: bool         # CRI: more containers may join (the VM is resizable)


def pod_role(task_id: str, annotations: Mapping[str, str]) -> PodRole:
    """Which VM a task belongs to. A CRI container joins its pod's sandbox; anything else
    (a CRI sandbox, or a plain `ctr run` container) gets a VM of its own."""
    kind = annotations.get(CONTAINER_TYPE, "")
    if kind == "container":
        sandbox = annotations.get(SANDBOX_ID, "")
        if not sandbox:
            raise PykataError(f"task {task_id}: annotation {CONTAINER_TYPE}=container "
                              f"without {SANDBOX_ID}")
        return PodRole(sandbox, sandbox == task_id, True)
    return PodRole(task_id, True, kind == "sandbox")


def socket_path(directory: str, containerd_address: str, namespace: str,
                sandbox_id: str) -> str:
    digest = hashlib.sha256(
        f"{containerd_address}\0{namespace}\0{sandbox_id}".encode()).hexdigest()[:32]
    path = f"{directory.rstrip('/')}/s/{digest}.sock"
    if len(path.encode()) > MAX_SOCKET_PATH:
        raise PykataError(f"shim socket path {path!r} is longer than {MAX_SOCKET_PATH} bytes: "
                          "shorten runtime.state_dir")
    return path
