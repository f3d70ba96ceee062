"""A container's `linux.sysctl`: which keys the agent applies itself, and applying them.

The OCI runtime sets sysctls inside the container's new namespaces. A pod container that
shares the VM's network namespace (the pod's) has no new one, and crun refuses its `net.*`
keys ("requires a new network namespace"): the agent writes those into the VM's namespace,
which is the pod's. IPC and UTS keys stay in the spec: the runtime sets them in the
container's IPC/UTS namespace, which its pod members join. Every key must exist in the
guest kernel, checked before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from pykata.domain.errors import BadValue

SYSCTL_ROOT = "/proc/sys"


def sysctl_path(key: str, root: str = SYSCTL_ROOT) -> str:
    """`net.ipv4.ip_forward` or `net/ipv4/ip_forward` -> <root>/net/ipv4/ip_forward (a key
    with a slash is a path already: its dots belong to names, e.g. `eth0.100`)."""
    return f"{root}/{key if '/' in key else key.replace('.', '/')}"


def _is_net(key: str) -> bool:
    return key.startswith(("net.", "net/"))


def take_vm_sysctls(spec: dict[str, Any], source: str,
                    exists: Callable[[str], bool] = os.path.exists,
                    root: str = SYSCTL_ROOT) -> dict[str, str]:
    """Checks every key of the spec's `linux.sysctl` against the guest kernel, and takes
    out (returns) the keys the agent applies to the VM: `net.*` when the container has no
    network namespace of its own."""
    linux = spec.get("linux")
    sysctl = linux.get("sysctl") if isinstance(linux, dict) else None
    if not sysctl:
        return {}
    if not isinstance(sysctl, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in sysctl.items()):
        raise BadValue(f"{source}: linux.sysctl", sysctl, "must map names to strings")
    for key in sysctl:
        if not key or ".." in key or not exists(sysctl_path(key, root)):
            raise BadValue(f"{source}: linux.sysctl", key, "the guest kernel has no such sysctl")
    assert isinstance(linux, dict)
    own_netns = any(isinstance(ns, Mapping) and ns.get("type") == "network"
                    for ns in linux.get("namespaces") or [])
    taken = {} if own_netns else {k: v for k, v in sysctl.items() if _is_net(k)}
    linux["sysctl"] = {k: v for k, v in sysctl.items() if k not in taken}
    return taken


def apply_sysctls(values: Mapping[str, str], source: str, root: str = SYSCTL_ROOT) -> None:
    for key, value in values.items():
        try:
            with open(sysctl_path(key, root), "w") as f:
                f.write(value)
        except OSError as exc:
            raise BadValue(f"{source}: linux.sysctl", f"{key}={value}",
                           f"the guest kernel refused it: {exc.strerror}") from None
