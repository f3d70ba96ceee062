"""Rewrite a host OCI spec into the one the guest runtime runs.

Host-only parts cannot work inside the VM: the root path moves to the shared mount,
namespace paths and hooks name host objects, bind mounts name host files. Each dropped
part becomes a warning, never a silent change.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pykata.plan.vm import GUEST_SHARED_DIR

_GUEST_FS_TYPES = {"proc", "tmpfs", "devpts", "mqueue", "sysfs", "cgroup", "cgroup2"}


def guest_rootfs(container_id: str) -> str:
    return f"{GUEST_SHARED_DIR}/{container_id}/rootfs"


def plan_guest_spec(
    doc: Mapping[str, Any], container_id: str
) -> tuple[dict[str, Any], list[str]]:
    out = copy.deepcopy(dict(doc))
    warnings: list[str] = []
    out["root"] = {**out.get("root", {}), "path": guest_rootfs(container_id)}
    if out.pop("hooks", None):
        warnings.append("hooks: host hooks cannot run inside the VM; ignored")
    mounts = []
    for mount in out.get("mounts", []):
        if mount.get("type") in _GUEST_FS_TYPES:
            mounts.append(mount)
        else:
            warnings.append(f"mount {mount.get('destination')!r} of type "
                            f"{mount.get('type')!r} is not shared into the VM yet; ignored")
    out["mounts"] = mounts
    linux = dict(out.get("linux", {}))
    namespaces = []
    for ns in linux.get("namespaces", []):
        if "path" in ns:
            warnings.append(f"namespace {ns.get('type')} path {ns['path']!r} is a host "
                            "path; the container gets a new one in the VM")
        namespaces.append({"type": ns.get("type")})
    linux["namespaces"] = namespaces
    linux["cgroupsPath"] = f"/pykata/{container_id}"
    out["linux"] = linux
    return out, warnings
