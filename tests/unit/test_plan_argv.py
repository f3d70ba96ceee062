"""Golden QEMU argv per guest architecture, with hotplug headroom as planned."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import pytest

from pykata.domain.config import Config, build_config, parse_toml
from pykata.domain.errors import ConfigError, NumaError
from pykata.domain.host import HostFacts
from pykata.host.topology import read_topology
from pykata.plan.arch import plan_arch
from pykata.plan.qemu import format_argv
from pykata.plan.vm import VmPlan, plan_qemu_argv, plan_vm

ALL = frozenset({"pc-dimm", "virtio-mem-pci", "virtio-mem-ccw"})
# name -> (binary, enable_virtio_mem, vsock, devices)
CASES = {
    "x86_64-pc-dimm": ("/usr/bin/qemu-system-x86_64", False, False, ALL),
    "x86_64-virtio-mem": ("/usr/bin/qemu-system-x86_64", True, False, ALL),
    "aarch64": ("/usr/bin/qemu-system-aarch64", False, True, ALL),
    "s390x": ("/usr/bin/qemu-system-s390x", True, True, frozenset({"virtio-mem-ccw"})),
    "ppc64le": ("/usr/bin/qemu-system-ppc64", False, False, ALL),
}
# $S: the state dir; $I: the image dir.
GOLDEN = {
    "x86_64-pc-dimm": (
        "/usr/bin/qemu-system-x86_64 -name pykata-sb1 -nodefaults -no-user-config -nographic "
        "-no-reboot -machine q35,memory-backend=mem0 -accel tcg,thread=multi,tb-size=64 -cpu "
        "qemu64,+rdrand -smp 1,maxcpus=4 -m 2048M,slots=10,maxmem=8192M -object "
        "memory-backend-memfd,id=mem0,size=2048M,share=on -kernel $I/vmlinuz -initrd "
        "$I/initramfs.img -append 'console=ttyS0 quiet panic=-1 reboot=k rdinit=/init "
        "i8042.noaux=1 i8042.nomux=1 i8042.nopnp=1 i8042.dumbkbd=1 cryptomgr.notests "
        "no_timer_check tsc=reliable swiotlb=noforce' -chardev "
        "socket,id=qmp,fd=3,server=on,wait=off -mon "
        "chardev=qmp,mode=control -chardev file,id=console,path=$S/console.log -serial "
        "chardev:console -chardev socket,id=fs0,path=$S/virtiofsd.sock -device "
        "vhost-user-fs-pci,chardev=fs0,tag=pykatafs,queue-size=1024 -device "
        "virtio-serial-pci,id=serial0 -chardev socket,id=agent,fd=4,server=on,wait=off -device "
        "virtserialport,chardev=agent,id=channel0,name=agent.channel.0"
    ),
    "x86_64-virtio-mem": (
        "/usr/bin/qemu-system-x86_64 -name pykata-sb1 -nodefaults -no-user-config -nographic "
        "-no-reboot -machine q35,memory-backend=mem0 -accel tcg,thread=multi,tb-size=64 -cpu "
        "qemu64,+rdrand -smp 1,maxcpus=4 -m 2048M,slots=10,maxmem=8192M -object "
        "memory-backend-memfd,id=virtiomem0-mem,size=6144M,share=on -device "
        "virtio-mem-pci,id=virtiomem0,memdev=virtiomem0-mem,requested-size=0 -object "
        "memory-backend-memfd,id=mem0,size=2048M,share=on -kernel $I/vmlinuz -initrd "
        "$I/initramfs.img -append 'console=ttyS0 quiet panic=-1 reboot=k rdinit=/init "
        "i8042.noaux=1 i8042.nomux=1 i8042.nopnp=1 i8042.dumbkbd=1 cryptomgr.notests "
        "no_timer_check tsc=reliable swiotlb=noforce' -chardev "
        "socket,id=qmp,fd=3,server=on,wait=off -mon "
        "chardev=qmp,mode=control -chardev file,id=console,path=$S/console.log -serial "
        "chardev:console -chardev socket,id=fs0,path=$S/virtiofsd.sock -device "
        "vhost-user-fs-pci,chardev=fs0,tag=pykatafs,queue-size=1024 -device "
        "virtio-serial-pci,id=serial0 -chardev socket,id=agent,fd=4,server=on,wait=off -device "
        "virtserialport,chardev=agent,id=channel0,name=agent.channel.0"
    ),
    "aarch64": (
        "/usr/bin/qemu-system-aarch64 -name pykata-sb1 -nodefaults -no-user-config -nographic "
        "-no-reboot -machine virt,memory-backend=mem0 -accel tcg,thread=multi,tb-size=64 -cpu max "
        "-smp 1,maxcpus=4 -m 2048M,slots=10,maxmem=8192M -object "
        "memory-backend-memfd,id=mem0,size=2048M,share=on -kernel $I/vmlinuz -initrd "
        "$I/initramfs.img -append 'console=ttyAMA0 quiet panic=-1 reboot=k rdinit=/init "
        "cryptomgr.notests' -chardev socket,id=qmp,fd=3,server=on,wait=off -mon "
        "chardev=qmp,mode=control -chardev file,id=console,path=$S/console.log -serial "
        "chardev:console -chardev socket,id=fs0,path=$S/virtiofsd.sock -device "
        "vhost-user-fs-pci,chardev=fs0,tag=pykatafs,queue-size=1024 -device "
        "vhost-vsock-pci,id=vsock0,guest-cid=3"
    ),
    "s390x": (
        "/usr/bin/qemu-system-s390x -name pykata-sb1 -nodefaults -no-user-config -nographic "
        "-no-reboot -machine s390-ccw-virtio,memory-backend=mem0 -accel "
        "tcg,thread=multi,tb-size=64 -cpu qemu -smp 1,maxcpus=4 -m 2048M,slots=10,maxmem=8192M "
        "-object memory-backend-memfd,id=virtiomem0-mem,size=6144M,share=on -device "
        "virtio-mem-ccw,id=virtiomem0,memdev=virtiomem0-mem,requested-size=0 -object "
        "memory-backend-memfd,id=mem0,size=2048M,share=on -kernel $I/vmlinuz -initrd "
        "$I/initramfs.img -append 'console=ttysclp0 quiet panic=-1 reboot=k rdinit=/init "
        "cryptomgr.notests' -chardev socket,id=qmp,fd=3,server=on,wait=off -mon "
        "chardev=qmp,mode=control -chardev file,id=console,path=$S/console.log -serial "
        "chardev:console -chardev socket,id=fs0,path=$S/virtiofsd.sock -device "
        "vhost-user-fs-ccw,chardev=fs0,tag=pykatafs,queue-size=1024 -device "
        "vhost-vsock-ccw,id=vsock0,guest-cid=3"
    ),
    "ppc64le": (
        "/usr/bin/qemu-system-ppc64 -name pykata-sb1 -nodefaults -no-user-config -nographic "
        "-no-reboot -machine pseries,memory-backend=mem0 -accel tcg,thread=multi,tb-size=64 -cpu "
        "power9 -smp 1,maxcpus=4 -m 2048M,slots=10,maxmem=8192M -object "
        "memory-backend-memfd,id=mem0,size=2048M,share=on -kernel $I/vmlinuz -initrd "
        "$I/initramfs.img -append 'console=hvc0 quiet panic=-1 reboot=k rdinit=/init "
        "cryptomgr.notests' -chardev socket,id=qmp,fd=3,server=on,wait=off -mon "
        "chardev=qmp,mode=control -chardev file,id=console,path=$S/console.log -serial "
        "chardev:console -chardev socket,id=fs0,path=$S/virtiofsd.sock -device "
        "vhost-user-fs-pci,chardev=fs0,tag=pykatafs,queue-size=1024 -device "
        "virtio-serial-pci,id=serial0 -chardev socket,id=agent,fd=4,server=on,wait=off -device "
        "virtserialport,chardev=agent,id=channel0,name=agent.channel.0"
    ),
}


def _cfg(path: str, virtio_mem: bool) -> Config:
    text = importlib.resources.files("pykata.domain").joinpath("defaults.toml").read_text()
    return build_config([("defaults", parse_toml(text, "d")), (
        "test", {"hypervisor": {"qemu": {"path": path, "enable_virtio_mem": virtio_mem}}})])


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_argv_per_arch(name: str) -> None:
    binary, virtio_mem, vsock, devices = CASES[name]
    facts = HostFacts(frozenset(), False, "no /dev/kvm", vsock, online_cpus=4,
                      mem_total_mib=8192)
    plan = plan_vm(_cfg(binary, virtio_mem), facts, "sb1", "/run/pykata/sb1", devices=devices)
    argv = format_argv(plan_qemu_argv(plan, qmp_fd=3, agent_fd=None if vsock else 4))
    want = GOLDEN[name].replace("$S/", "/run/pykata/sb1/").replace(
        "$I/", "/var/lib/pykata/image/")
    assert argv == want


@pytest.mark.parametrize(
    ("binary", "host", "want"),
    [("/usr/bin/qemu-system-x86_64", "aarch64", "x86_64"),
     ("/usr/bin/qemu-system-ppc64", "x86_64", "ppc64le"),
     ("/usr/local/bin/kvm", "aarch64", "aarch64"),
     ("/usr/local/bin/kvm", "ppc64le", "ppc64le")],
    ids=["from-binary", "ppc64-is-ppc64le", "host-arm", "host-ppc"],
)
def test_plan_arch(binary: str, host: str, want: str) -> None:
    assert plan_arch(binary, host).name == want


def test_unsupported_arch_names_the_binary() -> None:
    with pytest.raises(ConfigError, match=r"qemu-system-riscv64'.*'riscv64' is not supported"):
        plan_arch("/usr/bin/qemu-system-riscv64", "x86_64")


def test_explicit_machine_type_is_kept() -> None:
    text = importlib.resources.files("pykata.domain").joinpath("defaults.toml").read_text()
    cfg = build_config([("d", parse_toml(text, "d")), ("t", {"hypervisor": {"qemu": {
        "path": "/usr/bin/qemu-system-x86_64", "machine_type": "pc"}}})])
    facts = HostFacts(frozenset(), False, "", False, online_cpus=2, mem_total_mib=4096)
    assert plan_vm(cfg, facts, "s", "/r/s").machine_type == "pc"


# NUMA: per-node memfd backends bound to host nodes replace mem0 and -machine memory-backend=;
# -m stays the nodes' sum with its hotplug headroom; every vCPU slot has a node.
HOSTS = Path(__file__).resolve().parent.parent / "fixtures" / "hosts"
# name -> (host fixture, online CPUs, RAM MiB, hypervisor.qemu overrides)
NUMA_CASES: dict[str, tuple[str, int, int, dict[str, Any]]] = {
    "two-socket-spanning": ("two-socket-8gpu", 96, 515456,
                            {"default_maxvcpus": 4, "default_memory": 262144}),
    "two-socket-collapsed": ("two-socket-8gpu", 96, 515456, {"default_maxvcpus": 4}),
    "this-host-mapping-0-0": ("this-host", 2, 6488, {"numa_mapping": ["0", "0"]}),
}
_TAIL = (
    "-kernel $I/vmlinuz -initrd $I/initramfs.img -append 'console=ttyS0 quiet panic=-1 "
    "reboot=k rdinit=/init i8042.noaux=1 i8042.nomux=1 i8042.nopnp=1 i8042.dumbkbd=1 "
    "cryptomgr.notests no_timer_check tsc=reliable swiotlb=noforce' -chardev "
    "socket,id=qmp,fd=3,server=on,wait=off -mon chardev=qmp,mode=control -chardev "
    "file,id=console,path=$S/console.log -serial chardev:console -chardev "
    "socket,id=fs0,path=$S/virtiofsd.sock -device "
    "vhost-user-fs-pci,chardev=fs0,tag=pykatafs,queue-size=1024 -device "
    "virtio-serial-pci,id=serial0 -chardev socket,id=agent,fd=4,server=on,wait=off -device "
    "virtserialport,chardev=agent,id=channel0,name=agent.channel.0"
)
_HEAD = ("/usr/bin/qemu-system-x86_64 -name pykata-sb1 -nodefaults -no-user-config -nographic "
         "-no-reboot -machine q35 -accel tcg,thread=multi,tb-size=64 -cpu qemu64,+rdrand ")
NUMA_GOLDEN = {
    "two-socket-spanning": (
        "-smp 1,maxcpus=4 -m 262144M,slots=10,maxmem=515456M -object "
        "memory-backend-memfd,id=numa-mem0,size=131072M,share=on,host-nodes=0,policy=bind "
        "-numa node,nodeid=0,memdev=numa-mem0,cpus=0,cpus=2 -object "
        "memory-backend-memfd,id=numa-mem1,size=131072M,share=on,host-nodes=1,policy=bind "
        "-numa node,nodeid=1,memdev=numa-mem1,cpus=1,cpus=3 "
        "-numa dist,src=0,dst=1,val=21 -numa dist,src=1,dst=0,val=21 "
    ),
    "two-socket-collapsed": (
        "-smp 1,maxcpus=4 -m 2048M,slots=10,maxmem=515456M -object "
        "memory-backend-memfd,id=numa-mem0,size=2048M,share=on,host-nodes=0,policy=bind "
        "-numa node,nodeid=0,memdev=numa-mem0,cpus=0-3 "
    ),
    "this-host-mapping-0-0": (
        "-smp 1,maxcpus=2 -m 2048M,slots=10,maxmem=6400M -object "
        "memory-backend-memfd,id=numa-mem0,size=1024M,share=on,host-nodes=0,policy=bind "
        "-numa node,nodeid=0,memdev=numa-mem0,cpus=0 -object "
        "memory-backend-memfd,id=numa-mem1,size=1024M,share=on,host-nodes=0,policy=bind "
        "-numa node,nodeid=1,memdev=numa-mem1,cpus=1 "
        "-numa dist,src=0,dst=1,val=11 -numa dist,src=1,dst=0,val=11 "
    ),
}


def _numa_plan(name: str) -> VmPlan:
    host, cpus, mib, qemu = NUMA_CASES[name]
    text = importlib.resources.files("pykata.domain").joinpath("defaults.toml").read_text()
    cfg = build_config([("defaults", parse_toml(text, "d")), ("test", {"hypervisor": {"qemu": {
        "path": "/usr/bin/qemu-system-x86_64", "enable_numa": True, **qemu}}})])
    facts = HostFacts(frozenset(), False, "no /dev/kvm", False, online_cpus=cpus,
                      mem_total_mib=mib, topology=read_topology(HOSTS / host))
    return plan_vm(cfg, facts, "sb1", "/run/pykata/sb1", devices=ALL)


@pytest.mark.parametrize("name", sorted(NUMA_CASES))
def test_golden_numa_argv(name: str) -> None:
    argv = format_argv(plan_qemu_argv(_numa_plan(name), qmp_fd=3, agent_fd=4))
    want = (_HEAD + NUMA_GOLDEN[name] + _TAIL).replace("$S/", "/run/pykata/sb1/").replace(
        "$I/", "/var/lib/pykata/image/")
    assert argv == want


@pytest.mark.parametrize(
    ("name", "nodes", "reason"),
    [("two-socket-spanning", 2, "fit no single host node"),
     ("two-socket-collapsed", 1, "lowest-numbered host node that fits"),
     ("this-host-mapping-0-0", 2, "numa_mapping ['0', '0']")],
)
def test_numa_plan_joins_the_vm_plan(name: str, nodes: int, reason: str) -> None:
    plan = _numa_plan(name)
    assert plan.numa is not None and len(plan.numa.nodes) == nodes
    assert sum(n.memory_mib for n in plan.numa.nodes) == plan.memory_mib
    assert any(reason in r for r in plan.reasons)


def test_numa_off_plans_no_nodes() -> None:
    text = importlib.resources.files("pykata.domain").joinpath("defaults.toml").read_text()
    cfg = build_config([("d", parse_toml(text, "d"))])
    facts = HostFacts(frozenset(), False, "", False, online_cpus=96, mem_total_mib=515456,
                      topology=read_topology(HOSTS / "two-socket-8gpu"))
    plan = plan_vm(cfg, facts, "s", "/r/s")
    assert plan.numa is None
    assert "-numa" not in plan_qemu_argv(plan, 3, 4)


def test_enable_numa_without_topology_names_the_cause() -> None:
    text = importlib.resources.files("pykata.domain").joinpath("defaults.toml").read_text()
    cfg = build_config([("d", parse_toml(text, "d")),
                        ("t", {"hypervisor": {"qemu": {"enable_numa": True}}})])
    facts = HostFacts(frozenset(), False, "", False, online_cpus=2, mem_total_mib=4096)
    with pytest.raises(NumaError, match="no NUMA node with CPUs"):
        plan_vm(cfg, facts, "s", "/r/s")
