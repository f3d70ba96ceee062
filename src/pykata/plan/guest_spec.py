"""Rewrite a host OCI spec into the one the guest runtime runs.

Host-only parts cannot work inside the VM: the root path moves to the shared mount,
namespace paths and hooks name host objects. Bind mounts of host files and directories
become shares: the host binds the source below the shared directory, and the guest spec
binds it from there. A pod member's namespace paths that name its sandbox container's
namespaces (CRI's POD mode) become that container's namespaces in the guest. Each dropped
part becomes a warning, never a silent change.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pykata.domain.contract import GUEST_SHARED_DIR, NS_FILES, container_ns_path
from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import CpuSetError, SpecError
from pykata.plan.numa import NumaPlan, guest_mems
from pykata.plan.pci import VFIO_DIR

_GUEST_FS_TYPES = {"proc", "tmpfs", "devpts", "mqueue", "sysfs", "cgroup", "cgroup2"}
_BIND_OPTIONS = {"bind", "rbind"}


def guest_rootfs(container_id: str) -> str:
    return f"{GUEST_SHARED_DIR}/{container_id}/rootfs"


@dataclass(frozen=True)
class Share:
    """A host path the host binds at `<shared dir>/<container id>/<name>`."""
    source: str
    name: str
    readonly: bool


@dataclass(frozen=True)
class PodNamespaces:
    """What a pod member's namespace paths can name: containerd writes the sandbox
    container's as /proc/<its host pid>/ns/<file>, and every task's host pid is QEMU's."""
    host_pid: int
    sandbox_container: str

    def guest_path(self, ns_type: str, host_path: str) -> str | None:
        name = NS_FILES.get(ns_type)
        if name is None or host_path != f"/proc/{self.host_pid}/ns/{name}":
            return None
        return container_ns_path(self.sandbox_container, ns_type)


@dataclass(frozen=True)
class GuestSpec:
    doc: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    shares: list[Share] = field(default_factory=list)


# Namespaces a sandbox's spec leaves out to share the host's (CRI's NODE mode), by the
# Kubernetes field that asks for it.
_HOST_NAMESPACES = {"network": "hostNetwork", "pid": "hostPID", "ipc": "hostIPC"}


def check_host_namespaces(doc: Mapping[str, Any], allow: bool, source: str) -> list[str]:
    """A sandbox spec with no network, PID or IPC namespace asks for the host's, which a VM
    cannot share: refused, or with `allow` run with the VM's own and a warning."""
    linux = doc.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, Mapping) else None
    present = {ns.get("type") for ns in namespaces or () if isinstance(ns, Mapping)}
    host = [f"{kind} ({field})" for kind, field in _HOST_NAMESPACES.items()
            if kind not in present]
    if not host:
        return []
    what = f"the host's {', '.join(host)} namespace{'s' if len(host) > 1 else ''}"
    if not allow:
        raise SpecError(source, "linux.namespaces",
                        f"asks for {what}: a VM cannot share the host's namespaces; "
                        "[runtime] allow_host_namespaces = true runs it with the VM's own")
    return [f"linux.namespaces asks for {what}: a VM cannot share them; the sandbox gets "
            "the VM's own (runtime.allow_host_namespaces)"]


def _is_bind(mount: Mapping[str, Any]) -> bool:
    return mount.get("type") in ("bind", "rbind") or bool(
        _BIND_OPTIONS & set(mount.get("options") or []))


def plan_guest_spec(doc: Mapping[str, Any], container_id: str,
                    numa: NumaPlan | None = None, vm_netns: bool = False,
                    pod: PodNamespaces | None = None) -> GuestSpec:
    """`vm_netns`: the sandbox has the pod's network, which is the VM's own namespace: a
    network namespace with a path (the pod's) becomes the VM's, not a new one.
    `pod`: the container joins a pod whose sandbox container runs in the VM."""
    out = copy.deepcopy(dict(doc))
    plan = GuestSpec(out)
    out["root"] = {**out.get("root", {}), "path": guest_rootfs(container_id)}
    if out.pop("hooks", None):
        plan.warnings.append("hooks: host hooks cannot run inside the VM; ignored")
    out["mounts"] = [m for m in (_guest_mount(m, container_id, i, plan)
                                 for i, m in enumerate(out.get("mounts", []))) if m]
    linux = dict(out.get("linux", {}))
    linux["namespaces"] = _guest_namespaces(linux.get("namespaces", []), vm_netns, pod, plan)
    linux["cgroupsPath"] = f"/pykata/{container_id}"
    _drop_vfio(linux, plan)
    _guest_cpuset(linux, numa)
    out["linux"] = linux
    return plan


def _guest_namespaces(namespaces: list[dict[str, Any]], vm_netns: bool,
                      pod: PodNamespaces | None, plan: GuestSpec) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ns in namespaces:
        kind, path = ns.get("type"), ns.get("path")
        if vm_netns and kind == "network" and path:
            continue  # no entry: the container stays in the agent's (the VM's) namespace
        joined = pod.guest_path(str(kind), str(path)) if pod is not None and path else None
        if joined is not None:
            out.append({"type": kind, "path": joined})
            continue
        if path:
            plan.warnings.append(f"namespace {kind} path {path!r} is a host path; the "
                                 "container gets a new one in the VM")
        out.append({"type": kind})
    return out


def _drop_vfio(linux: dict[str, Any], plan: GuestSpec) -> None:
    devices = linux.get("devices")
    if not isinstance(devices, list):
        return
    vfio = [d for d in devices if isinstance(d, Mapping) and
            str(d.get("path", "")).startswith(VFIO_DIR)]
    if vfio:
        linux["devices"] = [d for d in devices if d not in vfio]
        plan.warnings.append(f"devices {', '.join(str(d['path']) for d in vfio)}: passed "
                             "through to the VM as PCI devices; the guest's driver makes "
                             "their device nodes")


def _guest_cpuset(linux: dict[str, Any], numa: NumaPlan | None) -> None:
    """Host CPU ids mean nothing in the guest (vCPU placement keeps the pod on them): cpus
    go; mems become the guest nodes bound to those host nodes (none: mems go too)."""
    resources = linux.get("resources")
    if not isinstance(resources, Mapping):
        return
    cpu = resources.get("cpu")
    if not isinstance(cpu, Mapping) or not ({"cpus", "mems"} & cpu.keys()):
        return
    mems = cpu.get("mems")
    kept = {k: v for k, v in cpu.items() if k not in ("cpus", "mems")}
    if isinstance(mems, str) and mems.strip() and numa is not None:
        try:
            guest = guest_mems(CpuSet.parse(mems), numa)
        except CpuSetError:
            guest = CpuSet()  # sizing refused it already; nothing to translate
        if guest:
            kept["mems"] = str(guest)
    linux["resources"] = {**resources, "cpu": kept}


def _guest_mount(mount: dict[str, Any], cid: str, index: int,
                 plan: GuestSpec) -> dict[str, Any] | None:
    if mount.get("type") in _GUEST_FS_TYPES:
        return mount
    source = mount.get("source")
    if _is_bind(mount) and isinstance(source, str) and source.startswith("/"):
        share = Share(source, f"mounts/{index}", "ro" in (mount.get("options") or []))
        plan.shares.append(share)
        options = [o for o in mount.get("options") or [] if o != "rbind"]
        return {**mount, "type": "bind", "source": f"{GUEST_SHARED_DIR}/{cid}/{share.name}",
                "options": [*options, "rbind"] if "bind" not in options else options}
    plan.warnings.append(f"mount {mount.get('destination')!r} of type {mount.get('type')!r} "
                         "is not shared into the VM; ignored")
    return None
