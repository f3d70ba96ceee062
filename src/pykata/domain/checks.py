"""What `pykata check` and `pykata env` know about a host, and what a check concludes.

Values only: pykata.host.checks reads them, pykata.plan.checks judges them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pykata.domain.host import HostFacts


class Status(enum.Enum):
    PASS = "pass"
    WARN = "warn"    # pykata runs, but slower or with less than it could
    FAIL = "fail"    # pykata cannot run until this is fixed


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    hint: str = ""   # what to do; empty when there is nothing to do


@dataclass(frozen=True)
class Tool:
    """An executable pykata runs, and what it says about itself."""

    path: str
    found: bool
    version: str = ""          # first line of --version; empty when unknown
    error: str = ""            # why it is missing or did not answer


@dataclass(frozen=True)
class QemuCaps:
    """What the QEMU binary offers (from its `help` listings; empty when it did not run)."""

    accels: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    machines: frozenset[str] = frozenset()


@dataclass(frozen=True)
class NumaNode:
    id: int
    cpus: str        # kernel list format, "0-3"
    mem_mib: int


@dataclass(frozen=True)
class HostReport:
    kernel_release: str
    facts: HostFacts                   # what `pykata run` plans with (host.facts reads them)
    kvm_device: bool                   # /dev/kvm exists
    kvm_modules: tuple[str, ...]       # loaded: kvm_intel, kvm_amd, kvm_pvm, ...
    qemu: Tool
    qemu_caps: QemuCaps
    virtiofsd: Tool
    devices: dict[str, bool] = field(default_factory=dict)   # /dev node -> exists
    modules: dict[str, bool] = field(default_factory=dict)   # kernel module -> loaded/builtin
    cgroup: str = ""                   # "v2", "v1 (hybrid, v2 at /sys/fs/cgroup/unified)", "v1"
    numa: tuple[NumaNode, ...] = ()
    euid: int = 0
    image_bytes: int = 0               # the DAX guest image's size (0: none, or unreadable)


@dataclass(frozen=True)
class ImageReport:
    """The guest image: `state` is current, stale (built from other inputs), unknown (could
    not compare), missing or broken (files differ from its manifest)."""

    state: str
    detail: str
