"""`pykata plan`: the VM the runtime would boot for a bundle or a Pod, and why. Boots nothing.

The plan is the one `pykata run` executes (plan_vm + plan_qemu_argv), from the same
inputs: the configuration (annotations applied), the bundle's limits or the Pod's, the
host's CPUs, RAM and NUMA topology (or a directory laid out like /sys) and the QEMU binary's
devices.
The argv shows QMP and agent sockets as fds 3 and 4; the runtime's fds may differ.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from typing import Any

from pykata.domain.annotations import apply_annotations, parse_annotations
from pykata.domain.config import Config
from pykata.domain.errors import SpecError
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts, read_sysfs_sizes
from pykata.host.qemu_caps import qemu_devices
from pykata.plan.pci import vfio_groups
from pykata.plan.sizing import Limits, workload_limits
from pykata.plan.vm import VmPlan, plan_qemu_argv, plan_vm

QMP_FD, AGENT_FD = 3, 4


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


def _annotations(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError("--annotation", pair, "expected KEY=VALUE")
        out[key] = value
    return out


def _bundle_inputs(args: argparse.Namespace, cfg: Config
                   ) -> tuple[Config, Limits, list[str], tuple[int, ...]]:
    path = os.path.join(args.bundle, "config.json")
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise SpecError(path, "(document)", "must be a JSON object")
    extra = _annotations(args.annotation)
    if extra:
        doc["annotations"] = {**parse_annotations(doc, path), **extra}
    annotations = parse_annotations(doc, path)
    before = len(cfg.warnings)
    if annotations:
        cfg = apply_annotations(cfg, annotations)
    return (cfg, workload_limits(doc, path), list(cfg.warnings[before:]),
            vfio_groups(doc, path))


def _pod_inputs(args: argparse.Namespace) -> tuple[Limits, list[str], str]:
    from pykata.plan.pod import plan_pod

    pod = plan_pod(_read_pod(args.pod), args.pod)
    return pod.workload, list(pod.warnings), pod.name


def build(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(getattr(args, "config", None))
    warnings = list(cfg.warnings)
    name = ""
    groups: tuple[int, ...] = ()
    if args.bundle:
        cfg, workload, more, groups = _bundle_inputs(args, cfg)
    else:
        workload, more, name = _pod_inputs(args)
    warnings += more
    facts = read_host_facts(args.sysfs_root or "/sys")
    if args.sysfs_root:
        cpus, mib = read_sysfs_sizes(args.sysfs_root)
        facts = dataclasses.replace(facts, online_cpus=cpus, mem_total_mib=mib)
    devices = qemu_devices(cfg.hypervisor.path, cfg.image.dir)
    plan = plan_vm(cfg, facts, "plan", os.path.join(cfg.runtime.state_dir, "plan"),
                   devices=devices, workload=workload, resizable=not args.run,
                   vfio_groups=groups)
    out = _document(plan, warnings)
    if args.pod:
        out["pod"] = name
        out["overhead"] = _overhead(plan, workload)
    return out


def _document(plan: VmPlan, warnings: list[str]) -> dict[str, Any]:
    s = plan.sizing
    return {
        "vcpus": s.vcpus, "max_vcpus": s.max_vcpus,
        "memory_mib": s.memory_mib, "max_memory_mib": s.max_memory_mib,
        "static": s.static, "memory_hotplug": s.memory_hotplug, "cpu_hotplug": s.cpu_hotplug,
        "qemu_argv": plan_qemu_argv(plan, QMP_FD, AGENT_FD if plan.transport != "vsock"
                                    else None),
        "warnings": [*warnings, *s.warnings, *(plan.numa.warnings if plan.numa else ())],
        "reasons": list(plan.reasons),
        "numa": plan.numa.to_json()["nodes"] if plan.numa else None,
        "devices": [d.to_json() for d in plan.passthrough],
    }


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
            ("memory hotplug", doc["memory_hotplug"])]
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
