"""`pykata plan`: the VM the runtime would boot for a bundle or a Pod, and why. Boots nothing.

The plan is the one the runtime executes (`pykata.plan.sandbox.plan_sandbox`), from a request
built the same way (`pykata.sandbox.request.build_request`): the configuration (annotations
applied), the bundle's limits or the Pod's, the host's CPUs, RAM and NUMA topology (or a
directory laid out like /sys), the QEMU binary's devices and the pod's network namespace.
The argv shows QMP, agent and inspect sockets as fds 3, 4 and 5 and taps from 6; the
runtime's fds differ.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

from pykata.domain.errors import SpecError
from pykata.domain.limits import Limits
from pykata.host.config_files import load_config
from pykata.plan.vm import VmPlan
from pykata.sandbox.request import (
    annotated,
    build_request,
    parse_annotation_args,
    plan_sandbox,
    read_facts,
)


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise SpecError(path, "(file)", str(exc)) from exc


def _read_pod(path: str) -> Any:
    import yaml  # type: ignore[import-untyped]  # only --pod needs it

    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(path, "(file)", str(exc)) from exc


def build(args: argparse.Namespace) -> dict[str, Any]:
    """The plan document: `SandboxPlan.to_json()` of the request the runtime would build."""
    cfg = load_config(getattr(args, "config", None))
    facts = read_facts(args.sysfs_root)
    if args.bundle:
        path = os.path.join(args.bundle, "config.json")
        doc = _read_json(path)
        if not isinstance(doc, dict):
            raise SpecError(path, "(document)", "must be a JSON object")
        doc = annotated(doc, parse_annotation_args(args.annotation))
        request = build_request(doc, cfg=cfg, sandbox_id="plan", resizable=not args.run,
                                facts=facts, source=path)
        return plan_sandbox(request).to_json()
    from pykata.plan.pod import plan_pod

    pod = plan_pod(_read_pod(args.pod), args.pod)
    request = build_request({}, cfg=cfg, sandbox_id="plan", resizable=not args.run,
                            workload=pod.workload, facts=facts, source=args.pod)
    plan = plan_sandbox(request)
    out = plan.to_json()
    out["warnings"] = [*pod.warnings, *out["warnings"]]
    out["pod"] = pod.name
    out["overhead"] = _overhead(plan.vm, pod.workload)
    return out


def _overhead(plan: VmPlan, workload: Limits) -> dict[str, str]:
    """What the VM adds beyond the pod's limits, for the RuntimeClass's overhead.podFixed
    (the guest's share only: QEMU's and virtiofsd's host memory are not counted)."""
    cpu = max(0.0, plan.sizing.vcpus - workload.vcpus)
    mem = max(0, plan.sizing.memory_mib - workload.memory_mib)
    return {"cpu": f"{math.ceil(cpu * 1000)}m", "memory": f"{mem}Mi"}


def _numa_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    if doc["numa"] is None:
        return [("NUMA", "off (one memory backend)")]
    from pykata.domain.cpuset import CpuSet

    return [(f"guest node {n['guest_node']}",
             f"host node(s) {CpuSet(n['host_nodes'])}, {n['memory_mib']} MiB, "
             f"vCPUs {CpuSet(n['vcpus']) or 'none'}") for n in doc["numa"]]


def _table(doc: dict[str, Any]) -> str:
    rows = [("vCPUs", f"{doc['vcpus']} (max {doc['max_vcpus']})"),
            ("memory", f"{doc['memory_mib']} MiB (max {doc['max_memory_mib']} MiB)"),
            ("sizing", "static" if doc["static"] else "dynamic"),
            ("CPU hotplug", "yes" if doc["cpu_hotplug"] else "no"),
            ("memory hotplug", doc["memory_hotplug"]),
            ("boot", f"{doc['boot']}: {doc['boot_reason']}")]
    if doc["grow_to"]:
        rows.append(("after restore", "hot-plugged up to that size"))
    if "overhead" in doc:
        rows.insert(0, ("pod", doc["pod"] or "(no name)"))
        rows.append(("pod overhead", f"cpu {doc['overhead']['cpu']}, memory "
                     f"{doc['overhead']['memory']} (RuntimeClass overhead.podFixed)"))
    rows += _numa_rows(doc)
    rows += [(f"device {d['bdf']}", f"host node {d['host_node']}, guest node "
              f"{'-' if d['guest_node'] is None else d['guest_node']}, root port {d['bus']}")
             for d in doc["devices"]]
    from pykata.plan.qemu import format_argv

    lines = [f"{k:<15} {v}" for k, v in rows]
    lines += ["", "why:"] + [f"  {r}" for r in doc["reasons"]]
    if doc["warnings"]:
        lines += ["", "warnings:"] + [f"  {w}" for w in doc["warnings"]]
    lines += ["", "qemu:", f"  {format_argv(doc['qemu_argv'])}"]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    doc = build(args)
    print(json.dumps(doc, indent=2) if args.json else _table(doc))
    return 0
