"""The configuration model: every key, declared once, as fields of frozen dataclasses.

Each key carries its Kata name, type, default, limits, whether an annotation may override
it, and a line of documentation. Validation and merging (`config`), the annotation rules
(`annotations`), `docs/configuration.md` and the packaged `defaults.toml` (`config_docs`)
all read this table; nothing else may restate a default. Values only: no I/O.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

Check = Callable[[Any], "str | None"]


# NamedTuples, not dataclasses: they are built at import, on `pykata run`'s start-up path.
class KeySpec(NamedTuple):
    """What the model knows about one key besides its type and default."""

    doc: str
    pykata: bool = False             # pykata's own key: Kata has no key of this name
    used: bool = True                # False: accepted and validated, nothing acts on it yet
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    check: Check | None = None       # further validation: None, or what is wrong
    unit: str = ""
    annotation: str | None = None    # name after io.katacontainers.config.<section>.
    path_globs: str | None = None    # key whose globs an annotated value must match


def _spec(doc: str, **spec: Any) -> dict[str, KeySpec]:
    return {"spec": KeySpec(doc, **spec)}


# ---- value checks: each returns what is wrong, or None; its docstring is its documentation --


def _absolute(value: str) -> str | None:
    """an absolute path"""
    return None if value.startswith("/") else "must be an absolute path"


def _absolute_or_empty(value: str) -> str | None:
    """empty or an absolute path"""
    return None if not value else _absolute(value)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def _plain_name(value: str) -> str | None:
    """a plain name, no commas"""
    # A comma would smuggle more options into QEMU's -machine argument.
    return None if _NAME.match(value) else "must be a plain name like q35 (no ',' or spaces)"


def _positive(value: float) -> str | None:
    """more than 0"""
    return None if value > 0 else "must be more than 0"


def _node_lists(value: tuple[str, ...]) -> str | None:
    """each a host NUMA node list"""
    from pykata.domain.cpuset import CpuSet
    from pykata.domain.errors import CpuSetError

    for entry in value:
        try:
            nodes = CpuSet.parse(entry)
        except CpuSetError as exc:
            return f"entry {entry!r}: {exc.why}; expected host NUMA node ids like '0' or '0-1'"
        if not nodes:
            return f"entry {entry!r}: names no host NUMA node"
    return None


def _regexes(value: tuple[str, ...]) -> str | None:
    """each a regular expression"""
    for entry in value:
        try:
            re.compile(entry)
        except re.error as exc:
            return f"entry {entry!r}: not a regular expression ({exc})"
    return None


def _globs(value: tuple[str, ...]) -> str | None:
    """each an absolute path glob"""
    for entry in value:
        if not entry.startswith("/"):
            return f"entry {entry!r}: must be an absolute path glob"
    return None


# ---- the model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HypervisorConfig:
    path: str = field(default="/usr/bin/qemu-system-x86_64", metadata=_spec(
        "QEMU binary.", check=_absolute, annotation="path",
        path_globs="valid_hypervisor_paths"))
    kernel: str = field(default="", metadata=_spec(
        "Guest kernel; empty: the built image's `<image.dir>/image/vmlinuz`.",
        check=_absolute_or_empty, annotation="kernel", path_globs="valid_kernel_paths"))
    image: str = field(default="", metadata=_spec(
        "Guest root filesystem image, mapped read-only into every VM on virtio-pmem and "
        "mounted with DAX (one copy in the host's page cache for all VMs); empty: the "
        "built image's `<image.dir>/image/rootfs.img`, unless `initrd` is set. Set at most "
        "one of `image` and `initrd`.",
        check=_absolute_or_empty, annotation="image", path_globs="valid_image_paths"))
    initrd: str = field(default="", metadata=_spec(
        "Guest initramfs holding the whole root (the layout for kernels without DAX); "
        "empty: the DAX `image`. The built one is `<image.dir>/image/initramfs.img`.",
        check=_absolute_or_empty, annotation="initrd", path_globs="valid_initrd_paths"))
    machine_type: str = field(default="q35", metadata=_spec(
        "QEMU machine type.", check=_plain_name, annotation="machine_type"))
    machine_accelerators: str = field(default="", metadata=_spec(
        "Extra `-machine` options, comma separated.", annotation="machine_accelerators"))
    cpu_features: str = field(default="pmu=off", metadata=_spec(
        "CPU features added to `-cpu`, comma separated.", used=False,
        annotation="cpu_features"))
    accel: str = field(default="auto", metadata=_spec(
        "`auto`: KVM when the CPU has vmx/svm and /dev/kvm works, else TCG; `kvm` (an error "
        "where KVM is unusable) or `tcg`.", pykata=True, choices=("auto", "kvm", "tcg"),
        annotation="accel"))
    tcg_tb_size: int = field(default=64, metadata=_spec(
        "TCG translation cache size; bounds QEMU's memory under TCG.", pykata=True,
        minimum=1, unit="MiB", annotation="tcg_tb_size"))
    reclaim_guest_freed_memory: bool = field(default=True, metadata=_spec(
        "Give memory the guest frees back to the host: a virtio-balloon with free page "
        "reporting, whose reported pages QEMU discards.",
        annotation="reclaim_guest_freed_memory"))
    kernel_params: str = field(default="", metadata=_spec(
        "Appended to the guest kernel command line (an annotation appends to this value, "
        "as in Kata).", annotation="kernel_params"))
    default_vcpus: float = field(default=1.0, metadata=_spec(
        "vCPUs at boot; fractions round up.", check=_positive, maximum=240,
        annotation="default_vcpus"))
    default_maxvcpus: int = field(default=0, metadata=_spec(
        "Most vCPUs the VM can grow to; 0: the host's CPUs (at most 240).",
        minimum=0, maximum=240, annotation="default_max_vcpus"))
    default_memory: int = field(default=2048, metadata=_spec(
        "Memory at boot.", minimum=64, unit="MiB", annotation="default_memory"))
    default_maxmemory: int = field(default=0, metadata=_spec(
        "Most memory the VM can grow to; 0: the host's RAM.", minimum=0,
        unit="MiB"))
    memory_slots: int = field(default=10, metadata=_spec(
        "Memory hotplug slots (`-m slots=`).", minimum=1, maximum=256,
        annotation="memory_slots"))
    overhead_vcpus: float = field(default=0.2, metadata=_spec(
        "vCPUs added to the workload's limit when sizing statically (runtime-rs).",
        minimum=0, maximum=240, annotation="overhead_vcpus"))
    overhead_memory: int = field(default=32, metadata=_spec(
        "Memory added to the workload's limit when sizing statically (runtime-rs).",
        minimum=0, unit="MiB", annotation="overhead_memory"))
    enable_virtio_mem: bool = field(default=False, metadata=_spec(
        "Resize memory with virtio-mem (both ways) instead of pc-dimm (grow only).",
        annotation="enable_virtio_mem"))
    enable_mem_prealloc: bool = field(default=False, metadata=_spec(
        "Pre-allocate all guest memory at boot.", used=False,
        annotation="enable_mem_prealloc"))
    enable_hugepages: bool = field(default=False, metadata=_spec(
        "Back guest memory with huge pages.", used=False, annotation="enable_hugepages"))
    enable_numa: bool = field(default=False, metadata=_spec(
        "Give the guest the host's NUMA layout: guest nodes bound to host nodes, right-sized "
        "to one node when the sandbox fits it."))
    numa_mapping: tuple[str, ...] = field(default=(), metadata=_spec(
        "Host NUMA nodes for each guest node, e.g. `[\"0\", \"1\"]`; bypasses right-sizing. "
        "Needs `enable_numa`.", check=_node_lists))
    shared_fs: str = field(default="virtio-fs", metadata=_spec(
        "How container root filesystems reach the guest.", choices=("virtio-fs",),
        annotation="shared_fs"))
    virtio_fs_daemon: str = field(default="/usr/lib/qemu/virtiofsd", metadata=_spec(
        "virtiofsd binary.", check=_absolute, annotation="virtio_fs_daemon",
        path_globs="valid_virtio_fs_daemon_paths"))
    virtio_fs_cache: str = field(default="auto", metadata=_spec(
        "virtiofsd cache mode.", choices=("auto", "always", "never"),
        annotation="virtio_fs_cache"))
    enable_annotations: tuple[str, ...] = field(default=(), metadata=_spec(
        "Hypervisor annotations a pod may use: regular expressions, each matched against the "
        "whole key name (`path` does not enable `jailer_path`).", check=_regexes))
    valid_hypervisor_paths: tuple[str, ...] = field(default=(), metadata=_spec(
        "Globs an annotated `path` must match.", check=_globs))
    valid_virtio_fs_daemon_paths: tuple[str, ...] = field(default=(), metadata=_spec(
        "Globs an annotated `virtio_fs_daemon` must match.", check=_globs))
    valid_kernel_paths: tuple[str, ...] = field(default=(), metadata=_spec(
        "Globs an annotated `kernel` must match.", pykata=True, check=_globs))
    valid_initrd_paths: tuple[str, ...] = field(default=(), metadata=_spec(
        "Globs an annotated `initrd` must match.", pykata=True, check=_globs))
    valid_image_paths: tuple[str, ...] = field(default=(), metadata=_spec(
        "Globs an annotated `image` must match.", pykata=True, check=_globs))


@dataclass(frozen=True)
class AgentConfig:
    dial_timeout: float = field(default=30.0, metadata=_spec(
        "How long to wait for the agent to answer after boot.", minimum=0.1, maximum=600,
        unit="seconds", annotation="dial_timeout"))
    transport: str = field(default="auto", metadata=_spec(
        "`auto`: vsock when /dev/vhost-vsock exists, else virtio-serial; `virtio-serial`; "
        "`vsock`.", pykata=True, choices=("auto", "virtio-serial", "vsock")))


@dataclass(frozen=True)
class RuntimeConfig:
    enable_vcpus_pinning: bool = field(default=False, metadata=_spec(
        "Pin each vCPU thread to one host CPU when the VM's vCPUs match the CPUs of the "
        "pod's cpuset (the union of its containers' cpusets); otherwise they share it.",
        annotation="enable_vcpus_pinning"))
    static_sandbox_resource_mgmt: bool = field(default=False, metadata=_spec(
        "Size the VM once at boot (the sandbox's limits plus `overhead_vcpus` and "
        "`overhead_memory`, or the defaults where it sets none); no hotplug."))
    sandbox_cgroup_only: bool = field(default=False, metadata=_spec(
        "Put all the sandbox's host processes (QEMU, virtiofsd, the shim) in the sandbox's "
        "cgroup; otherwise only the vCPU threads are there, the rest in "
        "`/pykata_overhead/<id>`.", annotation="sandbox_cgroup_only"))
    allow_host_namespaces: bool = field(default=False, metadata=_spec(
        "Run a sandbox that asks for the host's network, PID or IPC namespace (Kubernetes' "
        "`hostNetwork`, `hostPID`, `hostIPC`), which a VM cannot share, with namespaces of "
        "its own and a warning; otherwise it is refused.", pykata=True))
    internetworking_model: str = field(default="tcfilter", metadata=_spec(
        "How the VM joins the pod's network namespace (the spec's `network` namespace path): "
        "`tcfilter`, a tap per interface with tc redirects both ways; `none`, no network "
        "device.", choices=("tcfilter", "none"),
        annotation="internetworking_model"))
    create_container_timeout: int = field(default=60, metadata=_spec(
        "Deadline for creating, starting or exec'ing a process in the VM.", minimum=1,
        unit="seconds", annotation="create_container_timeout"))
    state_dir: str = field(default="/run/pykata", metadata=_spec(
        "Per-sandbox sockets, logs and mounts.", pykata=True, check=_absolute))


@dataclass(frozen=True)
class ImageConfig:
    dir: str = field(default="/var/lib/pykata", metadata=_spec(
        "Guest image, demo rootfs and package cache.", pykata=True, check=_absolute))


@dataclass(frozen=True)
class FactoryConfig:
    enable_template: bool = field(default=True, metadata=_spec(
        "Start sandboxes from a clone of a pre-booted, paused template VM (made on first "
        "use, or by `pykata factory init`); a sandbox the template cannot serve boots cold."))
    template_path: str = field(default="", metadata=_spec(
        "Where the template lives: its RAM file, device state and manifest. Empty: "
        "`<runtime.state_dir>/.template` (a name no sandbox id can take).",
        check=_absolute_or_empty))


@dataclass(frozen=True)
class Config:
    hypervisor: HypervisorConfig = field(default_factory=HypervisorConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    factory: FactoryConfig = field(default_factory=FactoryConfig)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    sources: tuple[str, ...] = field(default=(), compare=False)  # documents read, in order


# Config attribute -> TOML table; the annotation prefix uses the attribute name.
SECTIONS: dict[str, tuple[str, ...]] = {
    "hypervisor": ("hypervisor", "qemu"),
    "agent": ("agent", "pykata"),
    "runtime": ("runtime",),
    "image": ("image",),
    "factory": ("factory",),
}
CLASSES: dict[str, type] = {"hypervisor": HypervisorConfig, "agent": AgentConfig,
                             "runtime": RuntimeConfig, "image": ImageConfig,
                             "factory": FactoryConfig}
TYPE_NAMES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
              "tuple[str, ...]": "array of strings"}


class KeyInfo(NamedTuple):
    section: str                 # attribute of Config: "hypervisor"
    table: tuple[str, ...]       # TOML table: ("hypervisor", "qemu")
    name: str
    type: str                    # a key of TYPE_NAMES
    default: Any
    spec: KeySpec

    @property
    def dotted(self) -> str:
        return ".".join((*self.table, self.name))


@functools.cache
def keys() -> tuple[KeyInfo, ...]:
    """Every key of the model, in section and declaration order."""
    return tuple(
        KeyInfo(section, SECTIONS[section], f.name, str(f.type), f.default, f.metadata["spec"])
        for section, cls in CLASSES.items() for f in dataclasses.fields(cls)
    )


def key_info(dotted: str) -> KeyInfo:
    for k in keys():
        if k.dotted == dotted:
            return k
    raise KeyError(f"no configuration key {dotted!r}")
