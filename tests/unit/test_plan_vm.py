from __future__ import annotations

import dataclasses
import importlib.resources
from typing import Any

import pytest

from pykata.domain.config import Config, build_config, parse_toml
from pykata.domain.errors import ConfigError, NumaError
from pykata.domain.host import HostFacts
from pykata.domain.spec import default_spec
from pykata.plan.guest_spec import Share, plan_guest_spec
from pykata.plan.qemu import format_argv
from pykata.plan.vm import plan_accel, plan_qemu_argv, plan_transport, plan_vm


def _cfg(**qemu: Any) -> Config:
    text = importlib.resources.files("pykata.domain").joinpath("defaults.toml").read_text()
    return build_config([("defaults", parse_toml(text, "d")),
                         ("test", {"hypervisor": {"qemu": qemu}})])


def _facts(flags: set[str] | None = None, kvm: bool = True, vsock: bool = False) -> HostFacts:
    return HostFacts(frozenset(flags or {"sse2"}), kvm, "" if kvm else "no such device",
                     vsock, online_cpus=2, mem_total_mib=24000)


@pytest.mark.parametrize(
    ("requested", "flags", "kvm", "accel", "reason"),
    [
        ("auto", {"vmx"}, True, "kvm", "vmx"),
        ("auto", {"svm"}, True, "kvm", "svm"),
        ("auto", set(), True, "tcg", "no vmx/svm"),
        ("auto", {"vmx"}, False, "tcg", "/dev/kvm unusable"),
        ("tcg", {"vmx"}, True, "tcg", "configured"),
        ("kvm", {"vmx"}, True, "kvm", "vmx"),
    ],
    ids=["vmx", "svm", "pvm-no-flags", "kvm-missing", "forced-tcg", "forced-kvm"],
)
def test_plan_accel(requested: str, flags: set[str], kvm: bool, accel: str, reason: str) -> None:
    got, why = plan_accel(requested, _facts(flags, kvm))
    assert got == accel
    assert reason in why


def test_forced_kvm_without_hardware_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no vmx/svm"):
        plan_accel("kvm", _facts(set()))


@pytest.mark.parametrize(
    ("requested", "vsock", "want"),
    [("auto", False, "virtio-serial"), ("auto", True, "vsock"),
     ("virtio-serial", True, "virtio-serial"), ("vsock", True, "vsock")],
)
def test_plan_transport(requested: str, vsock: bool, want: str) -> None:
    assert plan_transport(requested, _facts(vsock=vsock)) == want


def test_vsock_without_device_is_an_error() -> None:
    with pytest.raises(ConfigError, match="vhost-vsock"):
        plan_transport("vsock", _facts(vsock=False))


def test_fractional_vcpus_round_up_and_cap() -> None:
    assert plan_vm(_cfg(default_vcpus=1.2), _facts(), "s", "/r/s").vcpus == 2
    plan = plan_vm(_cfg(default_vcpus=3), _facts(), "s", "/r/s")
    assert plan.vcpus == 2
    assert plan.sizing.warnings == ("vcpus 3 capped to the host's 2 CPUs",)


GOLDEN_TCG = (
    "/usr/bin/qemu-system-x86_64 -name pykata-sb1 -nodefaults -no-user-config -nographic "
    "-no-reboot -machine q35,memory-backend=mem0 -accel tcg,thread=multi,tb-size=64 "
    "-cpu qemu64,+rdrand -smp 1,maxcpus=1 -m 2048M "
    "-object memory-backend-memfd,id=mem0,size=2048M,share=on "
    "-kernel /var/lib/pykata/image/vmlinuz -initrd /var/lib/pykata/image/initramfs.img "
    "-append 'console=ttyS0 quiet panic=-1 reboot=k rdinit=/init i8042.noaux=1 i8042.nomux=1 "
    "i8042.nopnp=1 i8042.dumbkbd=1 cryptomgr.notests no_timer_check tsc=reliable "
    "swiotlb=noforce debug' "
    "-chardev socket,id=qmp,fd=3,server=on,wait=off -mon chardev=qmp,mode=control "
    "-chardev file,id=console,path=/run/pykata/sb1/console.log -serial chardev:console "
        "-chardev socket,id=fs0,path=/run/pykata/sb1/virtiofsd.sock "
    "-device vhost-user-fs-pci,chardev=fs0,tag=pykatafs,queue-size=1024 "
    "-device virtio-balloon-pci,id=balloon0,free-page-reporting=on "
    "-device virtio-serial-pci,id=serial0 -chardev socket,id=agent,fd=4,server=on,wait=off "
    "-device virtserialport,chardev=agent,id=channel0,name=agent.channel.0"
)


def test_golden_argv_tcg_virtio_serial() -> None:
    plan = plan_vm(_cfg(kernel_params="debug"), _facts(), "sb1", "/run/pykata/sb1")
    assert format_argv(plan_qemu_argv(plan, qmp_fd=3, agent_fd=4)) == GOLDEN_TCG


def test_argv_kvm_vsock() -> None:
    plan = plan_vm(_cfg(default_memory=512), _facts({"vmx"}, vsock=True), "sb2", "/r/sb2")
    argv = format_argv(plan_qemu_argv(plan, qmp_fd=3, agent_fd=None))
    assert "-accel kvm -cpu host" in argv
    assert "-device vhost-vsock-pci,id=vsock0,guest-cid=3" in argv
    assert "virtserialport" not in argv
    assert "-m 512M -object memory-backend-memfd,id=mem0,size=512M,share=on" in argv


def test_guest_spec_moves_root_and_drops_host_only_parts() -> None:
    doc = default_spec(["true"])
    doc["hooks"] = {"prestart": [{"path": "/bin/true"}]}
    doc["mounts"].append({"destination": "/data", "type": "overlay", "source": "x"})
    doc["linux"]["namespaces"].append({"type": "network", "path": "/var/run/netns/x"})
    plan = plan_guest_spec(doc, "c1")
    out, warnings = plan.doc, plan.warnings
    assert out["root"] == {"path": "/run/pykata/shared/c1/rootfs", "readonly": True}
    assert "hooks" not in out
    assert all(m["destination"] != "/data" for m in out["mounts"])
    assert {"type": "network"} in out["linux"]["namespaces"]
    assert all("path" not in ns for ns in out["linux"]["namespaces"])
    assert out["linux"]["cgroupsPath"] == "/pykata/c1"
    assert len(warnings) == 3
    assert doc["root"]["path"] == "rootfs", "input must not be modified"
    assert plan.shares == []


@pytest.mark.parametrize("mount, share, guest", [
    ({"destination": "/data", "type": "bind", "source": "/srv/d", "options": ["rbind", "rw"]},
     Share("/srv/d", "mounts/7", False),
     {"destination": "/data", "type": "bind", "source": "/run/pykata/shared/c1/mounts/7",
      "options": ["rw", "rbind"]}),
    ({"destination": "/etc/hosts", "type": "none", "source": "/h/hosts",
      "options": ["bind", "ro"]},
     Share("/h/hosts", "mounts/7", True),
     {"destination": "/etc/hosts", "type": "bind",
      "source": "/run/pykata/shared/c1/mounts/7", "options": ["bind", "ro"]}),
], ids=["ctr-rbind-dir", "cri-ro-file"])
def test_guest_spec_shares_host_binds(mount: dict[str, object], share: Share,
                                      guest: dict[str, object]) -> None:
    doc = default_spec(["true"])
    doc["mounts"].append(mount)
    plan = plan_guest_spec(doc, "c1")
    assert plan.shares == [share]
    assert plan.doc["mounts"][-1] == guest
    assert plan.warnings == []


def test_too_long_state_dir_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="runtime.state_dir.*exceeds 107 bytes"):
        plan_vm(_cfg(), _facts(), "a" * 32, "/run/" + "x" * 90)


def test_unreadable_topology_matters_only_for_numa() -> None:
    facts = dataclasses.replace(_facts(), topology_error="node/online: 'x': not a CPU list")
    assert plan_vm(_cfg(), facts, "sb", "/r/sb").numa is None
    with pytest.raises(NumaError, match="enable_numa True: node/online"):
        plan_vm(_cfg(enable_numa=True), facts, "sb", "/r/sb")


def _cpu_in_guest(cpu: dict[str, Any], numa: Any) -> object:
    doc = default_spec(["true"])
    doc["linux"]["resources"] = {"cpu": cpu, "memory": {"limit": 1 << 30}}
    out = plan_guest_spec(doc, "c1", numa).doc["linux"]["resources"]
    assert out["memory"] == {"limit": 1 << 30}
    return out["cpu"]


def test_guest_spec_clears_cpus_and_translates_mems() -> None:
    from pykata.domain.cpuset import CpuSet
    from pykata.plan.numa import GuestNode, NumaPlan
    numa = NumaPlan((GuestNode(0, CpuSet([1]), CpuSet([4]), (0,), 512),
                     GuestNode(1, CpuSet([2, 3]), CpuSet([8]), (1,), 512)),
                    ((10, 20), (20, 10)))
    assert _cpu_in_guest({"cpus": "4,8", "mems": "2", "shares": 2}, numa) == {
        "mems": "1", "shares": 2}
    assert _cpu_in_guest({"cpus": "4", "mems": "0-1"}, numa) == {"mems": "0"}
    assert _cpu_in_guest({"cpus": "4", "mems": "0"}, numa) == {}   # no guest node there
    assert _cpu_in_guest({"cpus": "4", "mems": "1"}, None) == {}    # no guest NUMA
    assert _cpu_in_guest({"quota": 5000}, None) == {"quota": 5000}


def test_guest_spec_drops_vfio_device_nodes() -> None:
    doc = default_spec(["true"])
    doc["linux"]["devices"] = [{"path": "/dev/vfio/40", "type": "c"},
                               {"path": "/dev/fuse", "type": "c"}]
    plan = plan_guest_spec(doc, "c1")
    assert plan.doc["linux"]["devices"] == [{"path": "/dev/fuse", "type": "c"}]
    assert any("/dev/vfio/40: passed through" in w for w in plan.warnings)
