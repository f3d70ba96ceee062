"""pykata inspect's readers and its text view (the live parts are tests/e2e/test_inspect.py)."""

from __future__ import annotations

from pathlib import Path

from pykata.sandbox.inspect import (
    MemoryView,
    SandboxView,
    VcpuView,
    _cgroup,
    parse_memfd_mappings,
    render,
)

MAPS = """\
5581d1a00000-5581d1b00000 r--p 00000000 08:01 1234  /usr/bin/qemu-system-x86_64
7fb8bbffe000-7fb8fbffe000 rw-s 00000000 00:01 3381                       /memfd:memory-backend-memfd (deleted)
7fb8fbfff000-7fb93bfff000 rw-s 00000000 00:01 3380                       /memfd:memory-backend-memfd (deleted)
"""  # noqa: E501
NUMA_MAPS = """\
5581d1a00000 default file=/usr/bin/qemu-system-x86_64 mapped=10 N0=10 kernelpagesize_kB=4
7fb8bbffe000 bind:1 file=/memfd:memory-backend-memfd\\040(deleted) dirty=256 N1=256 kernelpagesize_kB=4
7fb8fbfff000 bind:0 file=/memfd:memory-backend-memfd\\040(deleted) dirty=512 mapped=512 N0=512 kernelpagesize_kB=4
"""  # noqa: E501


def test_memfd_mappings_oldest_first_with_resident_bytes_per_node() -> None:
    assert parse_memfd_mappings(MAPS, NUMA_MAPS) == [
        (1 << 30, "bind", {"node0": 512 * 4096}),
        (1 << 30, "bind", {"node1": 256 * 4096}),
    ]


def test_cgroup_line_per_hierarchy(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    v1.write_text("12:cpu,cpuacct:/pykata/a\n4:cpuset:/pykata/a\n1:name=systemd:/x\n0::/\n")
    v2 = tmp_path / "v2"
    v2.write_text("0::/pykata/a/vcpus\n")
    assert _cgroup(str(v1)) == "/pykata/a"
    assert _cgroup(str(v2)) == "/pykata/a/vcpus"
    assert _cgroup(str(tmp_path / "gone")) == ""


def test_render_is_a_readable_table() -> None:
    view = SandboxView(
        "sb1", 42, {"enabled": True, "reason": "2 vCPUs on the 2 CPUs of the pod's cpuset"},
        [VcpuView(0, 100, 0, "0", "0", "/pykata/sb1"), VcpuView(1, 101, 1, "", "", "")],
        [MemoryView("numa-mem0", 1024, "bind", "0", {"node0": 192})],
        {"nodes": [{"guest_node": 0, "host_nodes": [0], "vcpus": [0], "memory_mib": 1024}]},
        [{"bdf": "0000:9d:00.0", "host_node": 1, "guest_node": 1, "bus": "rp-numa1-0"}])
    assert render(view).splitlines() == [
        "sandbox sb1  (QEMU pid 42)",
        "vCPU pinning: on; 2 vCPUs on the 2 CPUs of the pod's cpuset",
        "",
        "vCPU  thread  guest node  host CPUs  host node  cgroup",
        "0     100     0           0          0          /pykata/sb1",
        "1     101     1           gone",
        "",
        "memory backend  size      policy  bound to host nodes  resident by host node",
        "numa-mem0       1024 MiB  bind    0                    node0 192 MiB",
        "",
        "guest node  host nodes  vCPUs  memory",
        "0           0           0      1024 MiB",
        "",
        "device        host node  guest node  bus",
        "0000:9d:00.0  1          1           rp-numa1-0",
    ]
