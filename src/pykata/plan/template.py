"""VM templating: the template's VM, its key, and whether a sandbox boots as its clone. Pure.

A template is a booted, paused VM whose RAM and device state were saved; a clone restores
them into a new QEMU (`-incoming`) with its own copy of the RAM, shared with virtiofsd.
The template is the base VM only: default size with hotplug headroom, no shared
filesystem and no NIC, and spare root ports that a clone's virtio-fs device and NICs are
hot-plugged into. Its key says when it is stale: the QEMU binary, the kernel, initrd and
DAX image (path, size, mtime) and a hash of its argv (devices, sizes, kernel command line).

What cannot be served (guest NUMA nodes, VFIO, vsock, a size the template cannot grow to,
more NICs than spare ports) boots cold, with the reason in the plan.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from pykata.domain.config import Config
from pykata.plan.vm import NIC_PORTS, VmPlan, plan_qemu_argv

TEMPLATE_ID = "template"
# Virtio device ids (net 1, fs 26) a clone gets by hotplug: the template loads their drivers.
HOTPLUG_DEVICES = (1, 26)
HOTPLUG_PARAM = "pykata.hotplug=" + ",".join(map(str, HOTPLUG_DEVICES))
# The template directory: `ready/` holds the template in use, `new/` the one being made
# (renamed to `ready/` once whole); `lock` serialises makers (exclusive) and cloners
# (shared), and marks the directory as a template's for the orphan sweep.
READY, NEW, LOCK = "ready", "new", "template.lock"
MEMORY, STATE, MANIFEST = "memory", "state", "manifest.json"
# A clone's -kernel: the template's bzImage cut after its setup header. QEMU keeps the
# -kernel file in its own memory (13.5 MiB per VM); a clone never boots it.
KERNEL_STUB = "kernel.stub"
FAILED = "failed.json"  # beside ready/: when, why and for which key the last making failed
# After making a template failed, starts of that template boot cold without trying again
# for this long: a host that cannot make it (too slow to boot one within the dial timeout,
# say) must not make every start wait for another failure.
RETRY_AFTER_S = 600.0
# The fds `pykata plan` shows for the sockets QEMU inherits (the runtime's differ).
SHOWN_FDS = {"qmp": 3, "agent": 4, "inspect": 5, "ram": 6}


def template_dir(cfg: Config) -> str:
    """`[factory] template_path`, or `.template` in the state dir (no sandbox id starts
    with a dot)."""
    path = cfg.factory.template_path or f"{cfg.runtime.state_dir.rstrip('/')}/.template"
    return path.rstrip("/")


@dataclass(frozen=True)
class TemplateKey:
    """What a template was made from; any change makes it stale."""

    qemu: str      # "path:size:mtime_ns" of the QEMU binary
    kernel: str
    initrd: str
    image: str     # the DAX image's ("" for an initramfs root)
    vm: str        # sha256 of the template's argv, with fixed fds

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> TemplateKey | None:
        """None when `doc` is not a key (a corrupt manifest is no template)."""
        fields = [f.name for f in dataclasses.fields(cls)]
        if not all(isinstance(doc.get(f), str) for f in fields):
            return None
        return cls(*(str(doc[f]) for f in fields))

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, object] | None) -> TemplateKey | None:
        """The key a template's manifest records (None: no manifest, or a bad one)."""
        key = manifest.get("key") if manifest else None
        return cls.from_json(key) if isinstance(key, Mapping) else None

    def differs(self, other: TemplateKey) -> str:
        """Which parts differ from `other`, "" when none."""
        return ", ".join(f.name for f in dataclasses.fields(self)
                         if getattr(self, f.name) != getattr(other, f.name))


@dataclass(frozen=True)
class TemplateFailure:
    """The last failed making, as recorded: for which key, how long ago, and why."""

    key: TemplateKey
    age_s: float
    why: str


def failure_blocks(failure: TemplateFailure | None, key: TemplateKey) -> str | None:
    """Why making the template of `key` is not tried now (a recent failure of that same
    template), or None."""
    if failure is None or failure.key != key or not 0 <= failure.age_s < RETRY_AFTER_S:
        return None
    return (f"making the template failed {failure.age_s:.0f} s ago (tried again after "
            f"{RETRY_AFTER_S:.0f} s): {failure.why}")


@dataclass(frozen=True)
class FileIds:
    """The identities the key is made of, read from the host (`path:size:mtime_ns`): the
    QEMU binary's, and by path those of the guest files the configuration may boot from
    (an unreadable one is absent)."""

    qemu: str
    guest: Mapping[str, str]

    def of(self, vm: VmPlan) -> tuple[str, str, str] | None:
        """The identities of `vm`'s kernel, initrd and DAX image ("" for none), or None
        when one cannot be read."""
        kernel, initrd = self.guest.get(vm.kernel), self.guest.get(vm.initrd)
        image = self.guest.get(vm.image) if vm.image else ""
        if kernel is None or initrd is None or image is None:
            return None
        return kernel, initrd, image


@dataclass(frozen=True)
class TemplatePlan:
    """The template a clone needs: its VM (from the configuration files) and key."""

    vm: VmPlan
    key: TemplateKey

    @property
    def dir(self) -> str:
        return self.vm.template_dir


def template_vm(base: VmPlan, template_dir: str) -> VmPlan:
    """The template's VM from a base plan (no workload, resizable): RAM in a memfd QEMU
    shares, the hotplug drivers loaded at boot, no shared fs, spare root ports. It boots
    in `<template_dir>/new`."""
    return dataclasses.replace(
        base, sandbox_id=TEMPLATE_ID, boot="template", template_dir=template_dir,
        kernel_params=(*base.kernel_params, HOTPLUG_PARAM),
        console_log=f"{template_dir}/{NEW}/console.log", grow_to=None)


def template_argv(vm: VmPlan) -> list[str]:
    return plan_qemu_argv(vm, SHOWN_FDS["qmp"], SHOWN_FDS["agent"], SHOWN_FDS["inspect"],
                          ram_fd=SHOWN_FDS["ram"])


def template_key(vm: VmPlan, files: FileIds) -> TemplateKey | None:
    """`vm` is the template's VM; its argv is hashed with its paths and name fixed, so the
    same configuration gives the same key wherever it is computed. None: one of its guest
    files cannot be read."""
    guest = files.of(vm)
    if guest is None:
        return None
    fixed = dataclasses.replace(vm, console_log="/console.log", template_dir="/")
    digest = hashlib.sha256("\0".join(template_argv(fixed)).encode()).hexdigest()
    return TemplateKey(files.qemu, *guest, digest)


def unservable(pod: VmPlan, template: VmPlan, nics: int) -> str | None:
    """Why a clone of `template` cannot be the VM `pod` plans, or None when it can."""
    t, p = template.sizing, pod.sizing
    if pod.numa is not None:
        return "guest NUMA nodes (the template has one node)"
    if pod.passthrough:
        return "VFIO devices are passed through"
    if pod.transport != "virtio-serial":
        return f"agent transport {pod.transport} (a clone keeps the template's vsock CID)"
    if pod.arch.bus != "pci":
        return f"{pod.arch.name} has no PCIe root ports to hot-plug into"
    if nics > len(NIC_PORTS):
        return f"{nics} NICs, more than the template's {len(NIC_PORTS)} spare ports"
    if p.vcpus < t.vcpus or p.memory_mib < t.memory_mib:
        return (f"boot size {p.vcpus} vCPUs, {p.memory_mib} MiB is below the template's "
                f"{t.vcpus} vCPUs, {t.memory_mib} MiB")
    if p.vcpus > (t.max_vcpus if t.cpu_hotplug else t.vcpus):
        return f"{p.vcpus} vCPUs is beyond the template's hotplug headroom"
    if p.memory_mib > (t.max_memory_mib if t.memory_hotplug != "none" else t.memory_mib):
        return f"{p.memory_mib} MiB is beyond the template's hotplug headroom"
    return None


def plan_clone(pod: VmPlan, template: VmPlan, reason: str) -> VmPlan:
    """The template's VM as this sandbox's: its own sockets and console, the pod's
    defaults for later resizes (none when the pod is sized statically, as a cold boot
    would be), the pod's boot size to grow to after the restore, and the template's
    kernel stub for -kernel (its RAM holds the booted kernel)."""
    sizing = dataclasses.replace(
        template.sizing, default_vcpus=pod.sizing.default_vcpus,
        default_memory_mib=pod.sizing.default_memory_mib, warnings=pod.sizing.warnings,
        reasons=pod.sizing.reasons, static=pod.sizing.static)
    grow = (pod.sizing.vcpus, pod.sizing.memory_mib)
    return dataclasses.replace(
        template, sandbox_id=pod.sandbox_id, boot="clone", boot_reason=reason,
        kernel=f"{template.template_dir}/{READY}/{KERNEL_STUB}",
        virtiofs_socket=pod.virtiofs_socket, console_log=pod.console_log,
        guest_cid=pod.guest_cid, sizing=sizing, reasons=pod.reasons,
        grow_to=grow if grow != (template.sizing.vcpus, template.sizing.memory_mib) else None)


def plan_boot(pod: VmPlan, base: VmPlan | None, effective: VmPlan | None, nics: int,
              on_disk: TemplateKey | None, files: FileIds | None,
              failure: TemplateFailure | None = None) -> tuple[VmPlan, TemplatePlan | None]:
    """Cold or clone, with the reason, and the template a clone needs. `base`: the
    template's VM from the configuration files (None: templating is off); `effective`:
    from the sandbox's configuration (annotations applied); `on_disk`: the key of the
    template there now (None: none); `files`: the identities now; `failure`: the last
    failed making recorded there."""
    def cold(why: str) -> tuple[VmPlan, None]:
        return dataclasses.replace(pod, boot="cold", boot_reason=why), None

    if base is None or effective is None:
        return cold("templating is off ([factory] enable_template = false)")
    why = unservable(pod, effective, nics)
    if why:
        return cold(f"the template cannot serve this sandbox: {why}")
    if template_argv(effective) != template_argv(base):
        return cold("the sandbox's annotations change the VM the template holds")
    key = template_key(base, files) if files is not None else None
    if key is None:
        return cold("the QEMU binary, kernel, initrd or image cannot be read")
    if on_disk != key and (blocked := failure_blocks(failure, key)):
        return cold(blocked)
    if on_disk is None:
        reason = f"no template at {base.template_dir} yet: made first"
    elif changed := key.differs(on_disk):
        reason = f"the template is stale ({changed} changed): remade first"
    else:
        reason = f"from the template at {base.template_dir}"
    return plan_clone(pod, effective, reason), TemplatePlan(base, key)
