"""The NUMA suite's five scenarios as plan tests on every recorded host: the whole plan
(plan_vm: sizing, guest nodes, VFIO placement, argv) and where the vCPU threads would run
(plan_pinning). The same scenarios boot real VMs in tests/e2e/test_numa.py where this host
allows."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from pykata.domain.config import Config
from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import NumaError
from pykata.domain.host import HostFacts
from pykata.domain.limits import Limits
from pykata.domain.topology import HostTopology
from pykata.host.config_files import load_config
from pykata.host.topology import read_topology
from pykata.plan.pinning import plan_pinning
from pykata.plan.qemu import format_argv
from pykata.plan.vm import VmPlan, plan_qemu_argv, plan_vm

HOSTS = Path(__file__).resolve().parent.parent / "fixtures" / "hosts"
ALL_HOSTS = sorted(p.name for p in HOSTS.iterdir())
HOTPLUG = frozenset({"pc-dimm", "virtio-mem-pci"})


def _facts(host: str) -> HostFacts:
    topo = read_topology(HOSTS / host)
    cpus = sum(len(n.cpus) for n in topo.nodes)
    return HostFacts(frozenset({"vmx"}), True, "", False, cpus,
                     sum(n.memory_mib for n in topo.nodes), topology=topo)


def _cfg(**hv: object) -> Config:
    c = Config()
    return dataclasses.replace(c, hypervisor=dataclasses.replace(
        c.hypervisor, enable_numa=True, **hv))  # type: ignore[arg-type]


def _plan(host: str, cfg: Config, vcpus: float = 0, mib: int = 0,
          groups: tuple[int, ...] = ()) -> VmPlan:
    return plan_vm(cfg, _facts(host), "sb", "/run/pykata/sb", devices=HOTPLUG,
                   workload=Limits(vcpus, mib), vfio_groups=groups)


def _thread_nodes(plan: VmPlan, topo: HostTopology) -> dict[int, int]:
    """vCPU -> the one host node its thread may run on (pinning off, no cpuset)."""
    host_cpus = CpuSet(c for n in topo.nodes for c in n.cpus)
    pin = plan_pinning(range(plan.sizing.max_vcpus), [], host_cpus, False, plan.numa)
    out = {}
    for vcpu, cpus in pin.affinity.items():
        nodes = [n.id for n in topo.nodes if cpus & n.cpus]
        assert len(nodes) == 1 and cpus <= topo.node(nodes[0]).cpus, (vcpu, cpus)
        out[vcpu] = nodes[0]
    return out


def _gpu(topo: HostTopology) -> tuple[int, str, int] | None:
    """(IOMMU group, BDF, host node with CPUs it counts as on) of the device on the
    highest-numbered node: a GPU the "lowest node that fits" rule would get wrong. A device
    on a memory-only node counts as on the nearest node with CPUs."""
    with_cpus = [n.id for n in topo.nodes if n.cpus]
    found = []
    for g in topo.iommu_groups:
        for bdf in g.bdfs:
            node = topo.device_node(bdf)
            if node is None or node not in topo.node_ids:
                continue
            near = min(with_cpus, key=lambda h: (topo.distance(node, h), h))
            found.append((g.group, bdf, near))
    return max(found, key=lambda f: (f[2], f[0])) if found else None


def _gpu_or_skip(host: str, topo: HostTopology) -> tuple[int, str, int]:
    gpu = _gpu(topo)
    if gpu is None:
        pytest.skip(f"{host} has no passthrough device (recorded: no IOMMU group)")
    return gpu


def _big(host: str) -> tuple[int, int]:
    """vCPUs and MiB that fit no single host node."""
    topo = read_topology(HOSTS / host)
    return (max(len(n.cpus) for n in topo.nodes) + 1,
            max(n.memory_mib for n in topo.nodes) // 2)


@pytest.mark.parametrize("host", ALL_HOSTS)
def test_1_multi_node(host: str) -> None:
    topo = read_topology(HOSTS / host)
    vcpus, mib = _big(host)
    plan = _plan(host, _cfg(default_vcpus=float(vcpus), default_memory=mib))
    assert plan.numa is not None
    with_cpus = [n for n in topo.nodes if n.cpus]
    assert len(plan.numa.nodes) == len(with_cpus)
    boot = [sum(v < plan.vcpus for v in n.vcpus) for n in plan.numa.nodes]
    if len({len(n.cpus) for n in with_cpus}) == 1:   # equal nodes: balanced to one vCPU
        assert max(boot) - min(boot) <= 1, boot
    assert all(n.memory_mib > 0 for n in plan.numa.nodes)
    threads = Counter(_thread_nodes(plan, topo).values())
    assert sorted(threads) == [n.id for n in with_cpus]
    expected = {n.host_nodes.__iter__().__next__(): len(n.vcpus) for n in plan.numa.nodes}
    assert dict(threads) == expected


@pytest.mark.parametrize("host", ALL_HOSTS)
def test_2_right_sized(host: str) -> None:
    topo = read_topology(HOSTS / host)
    plan = _plan(host, _cfg(default_vcpus=1.0, default_maxvcpus=2, default_memory=1024))
    assert plan.numa is not None and len(plan.numa.nodes) == 1
    node = list(plan.numa.nodes[0].host_nodes)
    assert len(node) == 1
    assert set(_thread_nodes(plan, topo).values()) == set(node)


@pytest.mark.parametrize("host", ALL_HOSTS)
def test_3_gpu_multi_node(host: str) -> None:
    topo = read_topology(HOSTS / host)
    group, bdf, host_node = _gpu_or_skip(host, topo)
    vcpus, mib = _big(host)
    plan = _plan(host, _cfg(default_vcpus=float(vcpus), default_memory=mib), groups=(group,))
    assert plan.numa is not None and len(plan.numa.nodes) > 1
    boot = [len(n.vcpus) for n in plan.numa.nodes]
    weights = [len(n.host_cpus) for n in plan.numa.nodes]
    if len(set(weights)) == 1:
        assert max(boot) - min(boot) <= 1
    device = next(d for d in plan.passthrough if d.bdf == bdf)
    assert device.guest_node is not None
    assert list(plan.numa.nodes[device.guest_node].host_nodes) == [host_node]
    argv = format_argv(plan_qemu_argv(plan, 3, 4))
    assert "policy=bind" in argv
    assert (f"-device pxb-pcie,id=pxb-numa{device.guest_node},bus=pcie.0" in argv
            and f"numa_node={device.guest_node}" in argv)
    assert f"-device vfio-pci,host={bdf},bus={device.bus}" in argv


@pytest.mark.parametrize("host", ALL_HOSTS)
def test_4_gpu_right_sized(host: str) -> None:
    topo = read_topology(HOSTS / host)
    group, bdf, host_node = _gpu_or_skip(host, topo)
    plan = _plan(host, _cfg(default_vcpus=1.0, default_maxvcpus=2, default_memory=1024),
                 groups=(group,))
    assert plan.numa is not None
    assert [list(n.host_nodes) for n in plan.numa.nodes] == [[host_node]]
    assert set(_thread_nodes(plan, topo).values()) == {host_node}
    assert any(f"VFIO device {bdf}" in r for r in plan.reasons) or len(topo.nodes) == 1


@pytest.mark.parametrize("host", ALL_HOSTS)
def test_5_explicit_mapping_from_a_drop_in(host: str, tmp_path: Path) -> None:
    main = tmp_path / "configuration.toml"
    main.write_text("[hypervisor.qemu]\nenable_numa = true\ndefault_vcpus = 2\n")
    drop_in = tmp_path / "config.d" / "50-numa.toml"
    drop_in.parent.mkdir()
    drop_in.write_text('[hypervisor.qemu]\nnuma_mapping = ["1"]\n')
    topo = read_topology(HOSTS / host)
    try:
        cfg = load_config(str(main))
        assert cfg.hypervisor.numa_mapping == ("1",)
        if 1 not in topo.node_ids:
            with pytest.raises(NumaError, match=r"numa_mapping entry '1': .*host has nodes "
                               f"{topo.node_ids}"):
                _plan(host, cfg)
            return
        plan = _plan(host, cfg)
        assert plan.numa is not None
        assert [list(n.host_nodes) for n in plan.numa.nodes] == [[1]]
        assert set(_thread_nodes(plan, topo).values()) == {1}
    finally:
        drop_in.unlink()
    assert load_config(str(main)).hypervisor.numa_mapping == ()


def test_vfio_without_numa_gets_root_ports_on_the_root_bus() -> None:
    cfg = Config()
    plan = plan_vm(cfg, _facts("two-socket-8gpu"), "sb", "/run/pykata/sb",
                   vfio_groups=(20, 43))
    argv = format_argv(plan_qemu_argv(plan, 3, 4))
    assert (
        "-device pcie-root-port,id=rp-vfio0,bus=pcie.0,chassis=1 "
        "-device vfio-pci,host=0000:18:00.0,bus=rp-vfio0 "
        "-device pcie-root-port,id=rp-vfio1,bus=pcie.0,chassis=2 "
        "-device vfio-pci,host=0000:18:00.1,bus=rp-vfio1 "
        "-device pcie-root-port,id=rp-vfio2,bus=pcie.0,chassis=3 "
        "-device vfio-pci,host=0000:db:00.0,bus=rp-vfio2") in argv
    assert "pxb-pcie" not in argv


def test_gpus_on_two_nodes_get_two_expanders() -> None:
    plan = _plan("two-socket-8gpu", _cfg(default_vcpus=8.0, default_memory=8192),
                 groups=(43, 21))
    argv = format_argv(plan_qemu_argv(plan, 3, 4))
    assert ("-device pxb-pcie,id=pxb-numa0,bus=pcie.0,bus_nr=32,numa_node=0 "
            "-device pxb-pcie,id=pxb-numa1,bus=pcie.0,bus_nr=144,numa_node=1 "
            "-device pcie-root-port,id=rp-numa1-0,bus=pxb-numa1,chassis=1 "
            "-device vfio-pci,host=0000:db:00.0,bus=rp-numa1-0 "
            "-device pcie-root-port,id=rp-numa0-0,bus=pxb-numa0,chassis=2 "
            "-device vfio-pci,host=0000:2a:00.0,bus=rp-numa0-0") in argv


@pytest.mark.parametrize("path, why", [
    ("/dev/vfio/abc", "expected /dev/vfio/<IOMMU group number>"),
    ("/dev/vfio/99", "the host has no IOMMU group 99"),
])
def test_bad_vfio_devices_are_named(path: str, why: str) -> None:
    from pykata.domain.errors import SpecError
    from pykata.plan.pci import vfio_bdfs, vfio_groups

    doc = {"linux": {"devices": [{"path": "/dev/vfio/vfio"}, {"path": path}]}}
    with pytest.raises(SpecError, match=why):
        vfio_bdfs(vfio_groups(doc, "config.json"), _facts("two-socket-8gpu").topology,
                  "config.json")
