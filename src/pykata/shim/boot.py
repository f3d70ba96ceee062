"""Boot the sandbox a shim's first task asks for: its request (the configuration file
containerd names, the pod's annotations, the host's facts), the plan, then the VM."""

from __future__ import annotations

import asyncio
import logging

from pykata.sandbox.owner_stats import OwnerStats
from pykata.sandbox.request import build_request, plan_sandbox
from pykata.sandbox.sandbox import Sandbox
from pykata.shim.bundle import BootRequest

log = logging.getLogger(__name__)


async def boot_sandbox(req: BootRequest, stats: OwnerStats | None = None) -> Sandbox:
    # A pod grows as its containers come (hotplug headroom); a lone container's VM is
    # sized for it once, like `pykata run`.
    request = await asyncio.to_thread(
        build_request, req.spec.doc, config_path=req.config_path or None,
        sandbox_id=req.role.sandbox_id, resizable=req.role.is_pod, pod=req.role.is_pod,
        host_namespaces=True)
    plan = plan_sandbox(request)
    for warning in plan.warnings:
        log.warning("sandbox %s: %s", plan.id, warning)
    log.info("sandbox %s: booting %d vCPUs, %d MiB", plan.id, plan.vm.sizing.vcpus,
             plan.vm.sizing.memory_mib)
    sandbox = Sandbox(plan, stats=stats)
    await sandbox.start()
    return sandbox
