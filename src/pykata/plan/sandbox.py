"""One sandbox, planned whole: the request (spec, effective config, host facts gathered up
front) in, the plan the runtime executes out. Pure.

`plan_sandbox` decides the VM (sizing, NUMA, passthrough, argv), the pod's network (NICs,
tc redirects, their QEMU options), the sandbox cgroup, whether port-forward is set up, and
collects every warning. `pykata plan` prints `SandboxPlan.to_json()`; `Sandbox` executes
the same object, so what a user sees is what runs. Per-container guest specs are planned
when each container comes (`pykata.plan.guest_spec`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pykata.domain import ids
from pykata.domain.config import Config
from pykata.domain.host import HostFacts
from pykata.domain.limits import Limits
from pykata.plan.cgroups import CgroupLayout, CgroupPlan, plan_cgroups, sandbox_cgroup_path
from pykata.plan.network import (
    HostLink,
    HostRoute,
    NetworkPlan,
    NetworkRequest,
    nic_options,
    plan_network,
)
from pykata.plan.template import (
    TEMPLATE_ID,
    FileIds,
    TemplateFailure,
    TemplateKey,
    TemplatePlan,
    plan_boot,
    template_dir,
    template_vm,
)
from pykata.plan.vm import NO_LIMITS, VmPlan, plan_qemu_argv, plan_vm

# A CRI pod's identity, from its sandbox's annotations: what `pykata monitor` labels its
# series with (Kata's kata-monitor: cri_name, cri_namespace, cri_uid).
POD_LABELS = {"name": "io.kubernetes.cri.sandbox-name",
              "namespace": "io.kubernetes.cri.sandbox-namespace",
              "uid": "io.kubernetes.cri.sandbox-uid"}


def pod_labels(annotations: object) -> tuple[tuple[str, str], ...]:
    """The POD_LABELS the annotations carry, as (label, value) pairs (none from a spec
    whose annotations are not an object: reading the spec refuses that elsewhere)."""
    if not isinstance(annotations, Mapping):
        return ()
    return tuple((label, str(annotations[key])) for label, key in POD_LABELS.items()
                 if isinstance(annotations.get(key), str) and annotations[key])


# The fds `pykata plan` shows for the sockets, a clone's RAM and taps the runtime passes QEMU.
QMP_FD, AGENT_FD, INSPECT_FD, RAM_FD, FIRST_TAP_FD = 3, 4, 5, 6, 7


@dataclass(frozen=True)
class NetnsFacts:
    """The pod's network namespace as read before planning."""

    links: tuple[HostLink, ...]
    routes: tuple[HostRoute, ...]


@dataclass(frozen=True)
class SandboxRequest:
    """Everything a sandbox's plan depends on, gathered once (`pykata.sandbox.request`)."""

    sandbox_id: str
    config: Config                   # annotations applied
    facts: HostFacts
    devices: frozenset[str] = frozenset()  # the QEMU binary's (none: static sizing)
    workload: Limits = NO_LIMITS     # the limits known at boot
    resizable: bool = True           # containers come and go (hotplug headroom)
    vfio_groups: tuple[int, ...] = ()
    cgroups_path: str | None = None  # the spec's linux.cgroupsPath
    network: NetworkRequest | None = None
    netns: NetnsFacts | None = None  # read from `network.netns`
    port_forward: bool = False       # a CRI pod: answer dials to localhost in its namespace
    cgroup_layout: CgroupLayout | None = None  # the host's hierarchies (None: no cgroups)
    guest_cid: int = 3
    image_bytes: int = 0             # the DAX image's size (`plan.vm.image_path`; 0: unread)
    pod_labels: tuple[tuple[str, str], ...] = ()  # a CRI pod's name, namespace, uid
    warnings: tuple[str, ...] = ()   # from reading the request (config, annotations, spec)
    base_config: Config | None = None  # before annotations (None: `config`)
    template_files: FileIds | None = None  # what a template's key is made of, now
    template_devices: frozenset[str] = frozenset()  # the QEMU binary's, for the template
    template_on_disk: TemplateKey | None = None  # the template there now (None: none)
    template_failure: TemplateFailure | None = None  # the last failed making recorded there


@dataclass(frozen=True)
class SandboxPlan:
    id: str
    state_dir: str
    vm: VmPlan
    network_request: NetworkRequest | None
    network: NetworkPlan | None      # None: the VM gets no network device
    cgroup: str                      # the sandbox cgroup's path
    cgroups_path: str | None
    cgroups: CgroupPlan | None       # the host cgroups it gets (None: the host has none)
    port_forward: bool
    workload: Limits
    warnings: tuple[str, ...]
    template: TemplatePlan | None     # what a clone is made from (None: a cold boot)
    # What executing it needs beside the decisions (not printed).
    config: Config = field(repr=False, compare=False)
    facts: HostFacts = field(repr=False, compare=False)
    fallback: VmPlan | None = field(default=None, repr=False, compare=False)  # a clone's cold
    pod_labels: tuple[tuple[str, str], ...] = ()  # a CRI pod's name, namespace, uid

    def qemu_argv(self, qmp_fd: int, agent_fd: int | None, inspect_fd: int | None,
                  tap_fds: Sequence[int], ram_fd: int | None = None) -> list[str]:
        """A clone's NICs are hot-plugged after its restore: not in its argv."""
        nics = (nic_options(self.network, tap_fds, self.vm.arch.bus)
                if self.network and self.vm.boot == "cold" else [])
        return plan_qemu_argv(self.vm, qmp_fd, agent_fd, inspect_fd, nics, ram_fd)

    def shown_argv(self) -> list[str]:
        """The argv with the fds `pykata plan` shows (the runtime's differ)."""
        taps = range(FIRST_TAP_FD, FIRST_TAP_FD + len(self.network.nics if self.network else ()))
        return self.qemu_argv(QMP_FD, AGENT_FD if self.vm.transport != "vsock" else None,
                              INSPECT_FD, list(taps),
                              RAM_FD if self.vm.boot != "cold" else None)

    def to_json(self) -> dict[str, Any]:
        s, vm = self.vm.sizing, self.vm
        vcpus, memory = vm.start_size
        return {
            "vcpus": vcpus, "max_vcpus": s.max_vcpus,
            "memory_mib": memory, "max_memory_mib": s.max_memory_mib,
            "static": s.static, "memory_hotplug": s.memory_hotplug,
            "cpu_hotplug": s.cpu_hotplug,
            "boot": vm.boot, "boot_reason": vm.boot_reason,
            "grow_to": ({"vcpus": vm.grow_to[0], "memory_mib": vm.grow_to[1]}
                        if vm.grow_to else None),
            "qemu_argv": self.shown_argv(),
            "warnings": list(self.warnings),
            "reasons": list(vm.reasons),
            "numa": vm.numa.to_json()["nodes"] if vm.numa else None,
            "devices": [d.to_json() for d in vm.passthrough],
            "network": _network_json(self.network),
            "cgroup": self.cgroup,
            "cgroups": _cgroups_json(self.cgroups),
            "port_forward": self.port_forward,
        }


def _network_json(plan: NetworkPlan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    return {"netns": plan.netns,
            "nics": [{"link": n.link, "tap": n.tap, "mac": n.interface.mac,
                      "mtu": n.interface.mtu,
                      "addresses": [f"{a.address}/{a.prefix_len}" for a in n.interface.addresses],
                      "redirects": [r.describe() for r in n.redirects]} for n in plan.nics],
            "routes": [{"dest": r.dest or "default", "gateway": r.gateway, "device": r.device}
                       for r in plan.routes],
            "skipped": list(plan.skipped)}


def _cgroups_json(plan: CgroupPlan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    return {"version": plan.version, "sandbox": plan.sandbox, "overhead": plan.overhead,
            "vcpus": plan.vcpus}


def plan_sandbox(req: SandboxRequest) -> SandboxPlan:
    cfg = req.config
    ids.check_id("sandbox id", req.sandbox_id)  # it becomes a path
    state_dir = f"{cfg.runtime.state_dir.rstrip('/')}/{req.sandbox_id}"
    cgroup = sandbox_cgroup_path(req.cgroups_path, req.sandbox_id)
    pod_vm = plan_vm(cfg, req.facts, req.sandbox_id, state_dir, guest_cid=req.guest_cid,
                     devices=req.devices, workload=req.workload, resizable=req.resizable,
                     vfio_groups=req.vfio_groups, image_bytes=req.image_bytes)
    network = None
    if req.network is not None and req.netns is not None:
        network = plan_network(req.network.netns, req.netns.links, req.netns.routes)
    base_cfg = req.base_config or cfg
    base = plan_template_vm(base_cfg, req) if cfg.factory.enable_template else None
    # Annotations gave the sandbox a configuration of its own: its template VM may differ.
    effective = plan_template_vm(cfg, req) if base and base_cfg is not cfg else base
    vm, template = plan_boot(pod_vm, base, effective, len(network.nics) if network else 0,
                             req.template_on_disk, req.template_files,
                             req.template_failure)
    warnings = [*req.warnings, *vm.sizing.warnings, *(vm.numa.warnings if vm.numa else ()),
                *([] if req.cgroup_layout else ["no cgroup hierarchy mounted: no host cgroups"])]
    cgroups = (plan_cgroups(req.cgroup_layout, req.cgroups_path, req.sandbox_id,
                            cfg.runtime.sandbox_cgroup_only)
               if req.cgroup_layout is not None else None)
    return SandboxPlan(req.sandbox_id, state_dir, vm, req.network, network, cgroup,
                       req.cgroups_path, cgroups, req.port_forward and network is not None,
                       req.workload, tuple(warnings), template, cfg, req.facts,
                       pod_vm if template else None, req.pod_labels)


def plan_template_vm(cfg: Config, req: SandboxRequest) -> VmPlan:
    """The template's VM under `cfg`: the defaults, resizable, with the QEMU binary's
    hotplug devices."""
    path = template_dir(cfg)
    base = plan_vm(cfg, req.facts, TEMPLATE_ID, f"{path}/new", devices=req.template_devices,
                   image_bytes=req.image_bytes)
    return template_vm(base, path)
