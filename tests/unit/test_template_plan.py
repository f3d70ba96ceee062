"""VM templating, planned: when a sandbox boots as a clone and why not, the template's and a
clone's argv, the template's key; the sparse RAM copy; the agent's reseed and module list."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from sandbox_fakes import file_ids

from pykata.agent.boot import hotplug_devices
from pykata.agent.clone import entropy_ioctl_arg
from pykata.domain.config import build_config
from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import BadValue
from pykata.domain.host import HostFacts
from pykata.domain.limits import Limits
from pykata.domain.topology import HostNode, HostTopology
from pykata.plan.network import HostLink, NetworkRequest
from pykata.plan.sandbox import NetnsFacts, SandboxPlan, SandboxRequest, plan_sandbox
from pykata.plan.template import (
    HOTPLUG_PARAM,
    RETRY_AFTER_S,
    FileIds,
    TemplateFailure,
    TemplateKey,
    template_key,
)
from pykata.vmm.clone import copy_ram, write_kernel_stub

FACTS = HostFacts(frozenset(), False, "", False, online_cpus=4, mem_total_mib=16384)
DEVICES = frozenset({"pc-dimm", "virtio-mem-pci"})
FILES = file_ids("/q:1:1", "/k:2:2", "/i:3:3")
MIB = 1 << 20


def _cfg(extra: dict[str, Any] | None = None, enabled: bool = True) -> Any:
    doc: dict[str, Any] = {"runtime": {"state_dir": "/run/t"},
                           "factory": {"enable_template": enabled,
                                       "template_path": "/run/t-template"}}
    for section, values in (extra or {}).items():
        doc.setdefault(section, {}).update(values)
    return build_config([("t", doc)])


def _plan(on_disk: TemplateKey | None = None, files: FileIds | None = FILES, *,
          cfg: Any = None, base: Any = None, **req: Any) -> SandboxPlan:
    cfg = cfg or _cfg()
    return plan_sandbox(SandboxRequest("sb1", cfg, req.pop("facts", FACTS),
                                       devices=DEVICES, template_devices=DEVICES,
                                       base_config=base, template_files=files,
                                       template_on_disk=on_disk, **req))


def _key() -> TemplateKey:
    plan = _plan()
    assert plan.template is not None
    return plan.template.key


def _nic(i: int) -> HostLink:
    return HostLink(2 + i, f"eth{i}", f"02:00:00:00:00:0{i}", 1500, "veth", True)


@pytest.mark.parametrize(("req", "boot", "reason"), [
    pytest.param({"cfg": _cfg(enabled=False)}, "cold", "templating is off", id="off"),
    pytest.param({"files": None}, "cold", "cannot be read", id="files-unreadable"),
    pytest.param({"cfg": _cfg({"agent": {"pykata": {"transport": "vsock"}}}),
                  "facts": dataclasses.replace(FACTS, vhost_vsock=True)},
                 "cold", "vsock", id="vsock"),
    pytest.param({"network": NetworkRequest("/n"),
                  "netns": NetnsFacts(tuple(_nic(i) for i in range(4)), ())},
                 "cold", "4 NICs", id="too-many-nics"),
    pytest.param({"cfg": _cfg({"hypervisor": {"qemu": {"default_maxvcpus": 2}}}),
                  "resizable": False, "workload": Limits(vcpus=3)},
                 "cold", "4 vCPUs is beyond", id="beyond-cpu-headroom"),
    pytest.param({"cfg": _cfg({"hypervisor": {"qemu": {"default_memory": 1024}}}),
                  "base": _cfg()}, "cold", "annotations change", id="annotated-size"),
    pytest.param({}, "clone", "no template at /run/t-template yet", id="none-yet"),
    pytest.param({"on_disk": TemplateKey("/q:1:1", "/k:2:2", "/i:3:9", "", "x")}, "clone",
                 "stale (initrd, vm changed)", id="stale"),
])
def test_boot_decision(req: dict[str, Any], boot: str, reason: str) -> None:
    plan = _plan(**req)
    assert plan.vm.boot == boot
    assert reason in plan.vm.boot_reason
    assert (plan.template is not None) is (boot == "clone")
    assert plan.to_json()["boot"] == boot


@pytest.mark.parametrize(("age", "same_key", "boot"), [
    (5.0, True, "cold"), (RETRY_AFTER_S + 1, True, "clone"), (5.0, False, "clone")],
    ids=["recent", "old", "another-template"])
def test_a_failed_making_sends_starts_cold_for_a_while(age: float, same_key: bool,
                                                      boot: str) -> None:
    key = _key() if same_key else TemplateKey("/q:1:1", "/k:2:2", "/i:3:3", "", "other")
    plan = _plan(template_failure=TemplateFailure(key, age, "agent did not come up"))
    assert plan.vm.boot == boot
    if boot == "cold":
        assert plan.vm.boot_reason.startswith("making the template failed 5 s ago")
        assert plan.vm.boot_reason.endswith(": agent did not come up")


def test_a_current_template_is_cloned_and_grown_to_the_pods_size() -> None:
    plan = _plan(_key(), workload=Limits(vcpus=1, memory_mib=512))
    assert plan.vm.boot_reason == "from the template at /run/t-template"
    assert plan.vm.grow_to == (2, 2560)
    assert (plan.vm.vcpus, plan.vm.memory_mib) == (1, 2048)  # the template's, at restore
    assert plan.fallback is not None and plan.fallback.vcpus == 2
    assert plan.fallback.boot == "cold"


def test_numa_boots_cold() -> None:
    topo = HostTopology(nodes=(HostNode(0, CpuSet([0, 1]), 8192, (10, 20)),
                               HostNode(1, CpuSet([2, 3]), 8192, (20, 10))))
    facts = dataclasses.replace(FACTS, topology=topo)
    plan = _plan(facts=facts, cfg=_cfg({"hypervisor": {"qemu": {"enable_numa": True}}}))
    assert plan.vm.boot == "cold" and "NUMA" in plan.vm.boot_reason


def test_clone_argv_restores_on_a_memfd_and_has_spare_ports() -> None:
    argv = " ".join(_plan(_key()).shown_argv())
    assert ("-object memory-backend-file,id=mem0,size=2048M,mem-path=/proc/self/fd/6,"
            "share=on") in argv
    assert "-incoming defer" in argv
    assert "-kernel /run/t-template/ready/kernel.stub " in argv  # the RAM holds the kernel
    assert HOTPLUG_PARAM in argv
    assert "vhost-user-fs" not in argv  # hot-plugged after the restore
    for chassis, port in enumerate(("rp-fs", "rp-net0", "rp-net1", "rp-net2"), 1):
        assert f"-device pcie-root-port,id={port},bus=pcie.0,chassis={chassis}" in argv
    assert "console.log" in argv and "/run/t/sb1/console.log" in argv


def test_a_clone_gets_its_nics_by_hotplug() -> None:
    plan = _plan(_key(), network=NetworkRequest("/n"), netns=NetnsFacts((_nic(0),), ()))
    assert plan.vm.boot == "clone" and plan.network is not None
    assert "virtio-net" not in " ".join(plan.shown_argv())


def test_template_argv_is_cold_bootable() -> None:
    plan = _plan()
    assert plan.template is not None
    from pykata.plan.template import template_argv

    argv = " ".join(template_argv(plan.template.vm))
    assert "-incoming" not in argv and "pykata-template" in argv
    assert "-kernel /var/lib/pykata/image/vmlinuz " in argv
    assert "/run/t-template/new/console.log" in argv


def test_the_key_is_stable_and_names_what_changed() -> None:
    a, b = _key(), _key()
    assert a == b
    assert TemplateKey.from_json(a.to_json()) == a
    assert TemplateKey.from_json({"qemu": "x"}) is None
    plan = _plan()
    assert plan.template is not None
    moved = template_key(plan.template.vm, file_ids("/q:1:1", "/k:2:5", "/i:3:3"))
    assert moved is not None and moved.differs(a) == "kernel"
    assert template_key(plan.template.vm, FileIds("/q:1:1", {})) is None
    bigger = _plan(cfg=_cfg({"hypervisor": {"qemu": {"default_memory": 4096}}}))
    assert bigger.template is not None and bigger.template.key.differs(a) == "vm"


def test_copy_ram_skips_holes_and_zero_pages(tmp_path: Path) -> None:
    size = 8 * MIB
    src = os.open(tmp_path / "src", os.O_RDWR | os.O_CREAT)
    dst = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
    try:
        os.ftruncate(src, size)
        os.ftruncate(dst, size)
        os.pwrite(src, b"\xaa" * MIB, 2 * MIB)
        os.pwrite(src, bytes(MIB), 4 * MIB)  # allocated, but zeros
        os.pwrite(src, b"tail", size - 4)
        os.pwrite(src, b"\x01", 6 * MIB)  # one page of a MiB that is otherwise zeros
        assert copy_ram(src, dst, size) == MIB + 2 * 4096  # the tail's page, the 0x01 one
        assert os.pread(dst, size, 0) == os.pread(src, size, 0)
        assert os.fstat(dst).st_blocks * 512 <= MIB + 2 * 64 * 1024
    finally:
        os.close(src)
        os.close(dst)


def test_a_kernel_stub_keeps_the_setup_header_only(tmp_path: Path) -> None:
    image = bytearray(b"\x11" * (64 * 1024))
    image[0x1F1] = 7  # setup sectors: (7 + 1) * 512 bytes of setup code and header
    image[0x202:0x206] = b"HdrS"
    (tmp_path / "vmlinuz").write_bytes(bytes(image))
    n = write_kernel_stub(str(tmp_path / "vmlinuz"), str(tmp_path / "stub"))
    stub = (tmp_path / "stub").read_bytes()
    assert n == len(stub) == 8 * 512 + 4096
    assert stub[:8 * 512] == bytes(image[:8 * 512]) and stub[8 * 512:] == bytes(4096)
    (tmp_path / "elf").write_bytes(b"\x7fELF" + bytes(100))  # not a bzImage: copied whole
    write_kernel_stub(str(tmp_path / "elf"), str(tmp_path / "stub2"))
    assert (tmp_path / "stub2").read_bytes() == (tmp_path / "elf").read_bytes()


def test_reseed_argument_is_a_rand_pool_info() -> None:
    arg = entropy_ioctl_arg(b"\x01" * 32)
    assert arg[:8] == (256).to_bytes(4, "little") + (32).to_bytes(4, "little")
    assert arg[8:] == b"\x01" * 32
    for bad in (b"", b"x" * 4097):
        with pytest.raises(BadValue, match="reseed data length"):
            entropy_ioctl_arg(bad)


@pytest.mark.parametrize(("cmdline", "devices"), [
    ("console=ttyS0 quiet", set()),
    ("quiet pykata.hotplug=1,26 panic=-1", {1, 26}),
    ("pykata.hotplug=1,x,26", {1, 26}),
])
def test_hotplug_devices_from_the_command_line(cmdline: str, devices: set[int]) -> None:
    assert hotplug_devices(cmdline) == devices
