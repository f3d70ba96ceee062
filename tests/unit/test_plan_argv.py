"""Golden QEMU argv per guest architecture, with hotplug headroom as planned."""

from __future__ import annotations

import importlib.resources

import pytest

from pykata.domain.config import Config, build_config, parse_toml
from pykata.domain.errors import ConfigError
from pykata.domain.host import HostFacts
from pykata.plan.arch import plan_arch
from pykata.plan.qemu import format_argv
from pykata.plan.vm import plan_qemu_argv, plan_vm

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
        "no_timer_check tsc=reliable' -chardev socket,id=qmp,fd=3,server=on,wait=off -mon "
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
        "no_timer_check tsc=reliable' -chardev socket,id=qmp,fd=3,server=on,wait=off -mon "
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
