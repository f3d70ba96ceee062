"""Build a sandbox's request once, the same way for the shim, `pykata run` and `pykata plan`:
the spec (with any `--annotation`s), the configuration with the spec's allowed annotations
applied, and the host facts the plan needs, read up front (CPUs, memory and NUMA topology,
the QEMU binary's devices, the pod's network namespace).

This is the I/O before the pure `pykata.plan.sandbox.plan_sandbox`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any

from pykata.domain.annotations import apply_annotations, parse_annotations
from pykata.domain.config import Config
from pykata.domain.errors import SpecError
from pykata.domain.host import HostFacts
from pykata.domain.limits import Limits
from pykata.host import netns
from pykata.host.cgroups import read_layout
from pykata.host.config_files import load_config
from pykata.host.facts import image_bytes, read_host_facts, read_sysfs_sizes
from pykata.host.qemu_caps import binary_key, qemu_devices
from pykata.plan.cgroups import spec_cgroups_path
from pykata.plan.guest_spec import check_host_namespaces
from pykata.plan.network import NetworkRequest, plan_network_request
from pykata.plan.pci import vfio_groups
from pykata.plan.sandbox import NetnsFacts, SandboxRequest, plan_sandbox, pod_labels
from pykata.plan.sizing import limits_from_spec, workload_limits
from pykata.plan.template import (
    FAILED,
    MANIFEST,
    READY,
    FileIds,
    TemplateFailure,
    TemplateKey,
    template_dir,
)
from pykata.plan.vm import NO_LIMITS, built_image_dir, image_path

# For the shim, which reaches the host and the plans only through this layer.
__all__ = ["build_request", "limits_from_spec", "plan_sandbox", "request_from_parts"]


def random_guest_cid() -> int:
    """A vsock context id for one VM; 0-2 are reserved. Random, so concurrent sandboxes
    do not collide (QEMU fails to start on a CID in use, and says so)."""
    return secrets.randbelow(0xFFFF_FFFF - 3) + 3


def annotated(doc: Mapping[str, Any], extra: Mapping[str, str]) -> dict[str, Any]:
    """The spec document with `extra` annotations added or overriding (`--annotation`)."""
    out = dict(doc)
    if extra:
        out["annotations"] = {**(doc.get("annotations") or {}), **extra}
    return out


def parse_annotation_args(pairs: list[str]) -> dict[str, str]:
    """`--annotation K=V` arguments, as a mapping (a later K wins)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError("--annotation", pair, "expected KEY=VALUE")
        out[key] = value
    return out


def effective_config(cfg: Config, doc: Mapping[str, Any], source: str) -> Config:
    """`cfg` with the spec's `io.katacontainers.*` annotations the configuration allows
    applied; a refused one is an error."""
    annotations = parse_annotations(doc, source)
    return apply_annotations(cfg, annotations) if annotations else cfg


def read_facts(sysfs_root: str | None = None) -> HostFacts:
    """This host's facts, or those of a directory laid out like /sys (`pykata plan`)."""
    facts = read_host_facts(sysfs_root or "/sys")
    if sysfs_root:
        cpus, mib = read_sysfs_sizes(sysfs_root)
        facts = dataclasses.replace(facts, online_cpus=cpus, mem_total_mib=mib)
    return facts


def template_files(cfg: Config) -> FileIds | None:
    """The identities a template's key holds: QEMU's, and those of the guest files the
    configuration may boot from, as they are now (None: QEMU cannot be read)."""
    hv = cfg.hypervisor
    built = built_image_dir(cfg)
    paths = {hv.kernel or f"{built}/vmlinuz", hv.initrd or f"{built}/initramfs.img",
             f"{built}/initramfs-dax.img", image_path(cfg)} - {""}
    try:
        qemu = binary_key(hv.path)
    except OSError:
        return None
    guest = {}
    for path in sorted(paths):
        with contextlib.suppress(OSError):
            guest[path] = binary_key(path)
    return FileIds(qemu, guest)


def template_manifest(path: str) -> dict[str, Any] | None:
    """The manifest of the template in `path` (None: none, or not JSON)."""
    try:
        with open(os.path.join(path, READY, MANIFEST)) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def template_on_disk(cfg: Config) -> TemplateKey | None:
    """The key of the template there (None: none, or its manifest is bad)."""
    return TemplateKey.from_manifest(template_manifest(template_dir(cfg)))


def template_failure(path: str, now: float | None = None) -> TemplateFailure | None:
    """The last failed making recorded in the template dir `path` (None: none, or bad)."""
    try:
        with open(os.path.join(path, FAILED)) as f:
            doc = json.load(f)
        key = TemplateKey.from_json(doc["key"])
        age = (time.time() if now is None else now) - float(doc["time"])
        why = str(doc["why"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return TemplateFailure(key, age, why) if key is not None else None


def template_facts(cfg: Config, devices: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The request's template fields; nothing is read while templating is off. The
    template's devices are the QEMU binary's (`devices` when already read) whatever the
    sandbox's own sizing uses."""
    if not cfg.factory.enable_template:
        return {}
    return {"template_files": template_files(cfg), "template_on_disk": template_on_disk(cfg),
            "template_failure": template_failure(template_dir(cfg)),
            "template_devices": devices or qemu_devices(cfg.hypervisor.path, cfg.image.dir)}


def read_netns(network: NetworkRequest | None) -> NetnsFacts | None:
    if network is None:
        return None
    links, routes = netns.in_netns(network.netns, netns.read_namespace)
    return NetnsFacts(tuple(links), tuple(routes))


def build_request(doc: Mapping[str, Any], *, cfg: Config | None = None,
                  config_path: str | None = None, sandbox_id: str | None = None,
                  resizable: bool, pod: bool = False, host_namespaces: bool = False,
                  workload: Limits | None = None, facts: HostFacts | None = None,
                  source: str = "config.json") -> SandboxRequest:
    """`doc`: the sandbox's spec (a pod's sandbox container's, or the one container's);
    `resizable`: containers come and go (hotplug headroom); `pod`: a CRI pod (it gets
    port-forward); `host_namespaces`: a spec without a network, PID or IPC namespace asks
    for the host's (containerd's meaning), refused unless allowed; `workload`: the limits
    known at boot when not the spec's (a Pod manifest's)."""
    base = cfg or load_config(config_path)
    effective = effective_config(base, doc, source)
    warnings = list(effective.warnings)
    if host_namespaces:
        warnings += check_host_namespaces(doc, effective.runtime.allow_host_namespaces, source)
    network = plan_network_request(doc, effective.runtime.internetworking_model)
    hv = effective.hypervisor
    # Read once: for the sandbox's own hotplug headroom, or the template's.
    known = (qemu_devices(hv.path, effective.image.dir)
             if resizable or effective.factory.enable_template else frozenset())
    return SandboxRequest(
        sandbox_id=sandbox_id or uuid.uuid4().hex, config=effective,
        facts=facts or read_facts(),
        devices=known if resizable else frozenset(),
        workload=workload if workload is not None else workload_limits(doc, source),
        resizable=resizable, vfio_groups=vfio_groups(doc, source),
        cgroups_path=spec_cgroups_path(doc, source), network=network,
        netns=read_netns(network), port_forward=pod,
        guest_cid=random_guest_cid(), image_bytes=image_bytes(effective),
        pod_labels=pod_labels(doc.get("annotations") or {}),
        warnings=tuple(warnings), cgroup_layout=read_layout(),
        base_config=base, **template_facts(effective, known))


def request_from_parts(cfg: Config, facts: HostFacts, sandbox_id: str | None = None, *,
                       devices: frozenset[str] = frozenset(), workload: Limits = NO_LIMITS,
                       resizable: bool = True, vfio_groups: tuple[int, ...] = (),
                       cgroups_path: str | None = None, network: NetworkRequest | None = None,
                       port_forward: bool = False) -> SandboxRequest:
    """A request from its parts, for a sandbox without a spec (tests, benchmarks, checks)."""
    return SandboxRequest(
        sandbox_id or uuid.uuid4().hex, cfg, facts, devices=devices, workload=workload,
        resizable=resizable, vfio_groups=vfio_groups, cgroups_path=cgroups_path,
        network=network, netns=read_netns(network), port_forward=port_forward,
        cgroup_layout=read_layout(), guest_cid=random_guest_cid(), image_bytes=image_bytes(cfg),
        warnings=tuple(cfg.warnings), **template_facts(cfg))
