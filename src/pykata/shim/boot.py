"""Boot the sandbox a shim's first task asks for: configuration (the file containerd names,
then the pod's annotations), host facts, sizing from the task's limits, then the VM."""

from __future__ import annotations

import logging

from pykata.domain.annotations import apply_annotations, parse_annotations
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.host.qemu_caps import qemu_devices
from pykata.plan.cgroups import spec_cgroups_path
from pykata.plan.guest_spec import check_host_namespaces
from pykata.plan.network import plan_network_request
from pykata.plan.pci import vfio_groups
from pykata.plan.sizing import workload_limits
from pykata.sandbox.sandbox import Sandbox
from pykata.shim.bundle import BootRequest

log = logging.getLogger(__name__)


async def boot_sandbox(req: BootRequest) -> Sandbox:
    cfg = load_config(req.config_path or None)
    annotations = parse_annotations(req.spec.doc, "config.json")
    if annotations:
        cfg = apply_annotations(cfg, annotations)
    warnings = check_host_namespaces(req.spec.doc, cfg.runtime.allow_host_namespaces,
                                     "config.json")
    for warning in [*cfg.warnings, *warnings]:
        log.warning("sandbox %s: %s", req.role.sandbox_id, warning)
    workload = workload_limits(req.spec.doc, "config.json")
    # A pod grows as its containers come (hotplug headroom); a lone container's VM is
    # sized for it once, like `pykata run`.
    devices = (qemu_devices(cfg.hypervisor.path, cfg.image.dir) if req.role.is_pod
               else frozenset[str]())
    network = plan_network_request(req.spec.doc, cfg.runtime.internetworking_model)
    sandbox = Sandbox(cfg, read_host_facts(), req.role.sandbox_id, devices=devices,
                      workload=workload, resizable=req.role.is_pod,
                      vfio_groups=vfio_groups(req.spec.doc, "config.json"),
                      cgroups_path=spec_cgroups_path(req.spec.doc, "config.json"),
                      network=network, port_forward=req.role.is_pod)
    for warning in sandbox.plan.sizing.warnings:
        log.warning("sandbox %s: %s", sandbox.id, warning)
    log.info("sandbox %s: booting %d vCPUs, %d MiB", sandbox.id, sandbox.plan.sizing.vcpus,
             sandbox.plan.sizing.memory_mib)
    await sandbox.start()
    return sandbox
