"""`pykata monitor`'s collectors against recorded /proc files and a state directory laid out
as a running sandbox leaves it."""

from __future__ import annotations

import json
import os
import socketserver
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from pykata.cli.monitor import SandboxCollector, parse_listen
from pykata.domain.errors import ConfigError
from pykata.host.procstat import parse_pss, parse_stat, parse_status, read_process
from pykata.sandbox.metrics import read_sandbox
from pykata.sandbox.owner_stats import BUCKETS_S, Histogram, OwnerStats, resize_kind

# Recorded from a QEMU under TCG (fields after utime/stime shortened to what is parsed).
STAT = ("4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194560 36119 0 0 0 250 75 0 0 20 0 "
        "7 0 1234567 2401239040 75841 18446744073709551615")
STATUS = """Name:\tqemu-system-x86
VmPeak:\t 2451232 kB
VmSize:\t 2344932 kB
VmHWM:\t  303464 kB
VmRSS:\t  303364 kB
RssAnon:\t   84660 kB
RssFile:\t   22180 kB
RssShmem:\t  196524 kB
VmData:\t  227128 kB
VmSwap:\t       0 kB
Threads:\t7
"""
ROLLUP = ("55d0a0000000-7ffd8a5f7000 ---p 00000000 00:00 0 [rollup]\n"
          "Rss: 303364 kB\nPss: 146512 kB\n")


def test_proc_files_parse() -> None:
    assert parse_stat(STAT, ticks=100) == (2.5, 0.75, 7)
    assert parse_stat(STAT.replace("(qemu-system-x86)", "(a ) b)"), ticks=100) == (2.5, 0.75, 7)
    status = parse_status(STATUS)
    assert status["vmrss"] == 303364 * 1024 and status["rssanon"] == 84660 * 1024
    assert "threads" not in status
    assert parse_pss(ROLLUP) == 146512 * 1024


def _proc(root: Path, pid: int, fds: int = 3) -> None:
    d = root / str(pid)
    (d / "fd").mkdir(parents=True)
    for i in range(fds):
        (d / "fd" / str(i)).touch()
    (d / "stat").write_text(STAT)
    (d / "status").write_text(STATUS)
    (d / "smaps_rollup").write_text(ROLLUP)


GUEST = {
    "meminfo": ("MemTotal:        2027000 kB\nMemFree:         1972292 kB\n"
                "HugePages_Total:       0\n"),
    "stat": "cpu  120 0 80 5000 3 0 2 0 0 0\ncpu0 120 0 80 5000 3 0 2 0 0 0\nintr 1\n",
    "loadavg": "0.08 0.03 0.01 1/60 123\n",
    "net_dev": ("Inter-|   Receive |  Transmit\n face |bytes packets|bytes packets\n"
                "  eth0:    1500      10    0    0    0     0          0         0      700"
                "       7    0    0    0     0       0          0\n"),
    "agent_stat": STAT, "agent_status": STATUS, "agent_fds": "9",
}


def _owner_figures() -> dict[str, Any]:
    stats = OwnerStats(ready_s=0.8)
    stats.resized("cpu", "grow", 0.7)
    stats.resized("cpu", "grow", 0.8)
    stats.answered("Create", 120.0)
    return {**stats.to_json(), "boot": "clone", "size": [2, 2560]}


OWNER = _owner_figures()


def test_a_resize_is_named_by_what_changed() -> None:
    assert resize_kind("pc-dimm", (1, 2048), (2, 2048)) == ("cpu", "grow")
    assert resize_kind("virtio-mem", (2, 2048), (2, 1024)) == ("virtio-mem", "shrink")
    assert resize_kind("pc-dimm", (1, 2048), (2, 2560)) == ("cpu+pc-dimm", "grow")
    h = Histogram()
    for seconds in (0.01, 0.6, 40.0):
        h.observe(seconds)
    assert h.counts[0] == 1 and h.counts[BUCKETS_S.index(1.0)] == 1 and h.counts[-1] == 1
    assert h.total == 40.61


def _owner(path: Path, doc: dict[str, Any]) -> socketserver.UnixStreamServer:
    """A stand-in for the sandbox owner's metrics socket, answering `doc`."""
    class Answer(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(json.dumps(doc).encode())

    server = socketserver.UnixStreamServer(str(path), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


MINE = {"sandbox_id": "good", "cri_name": "web", "cri_namespace": "default", "cri_uid": "u-1"}


def _sandbox(state: Path, sandbox_id: str, pinned: bool | None = True) -> None:
    d = state / sandbox_id
    d.mkdir(parents=True)
    (d / "pids").write_text("qemu 4242\nvirtiofsd 4243\n")
    (d / "owner").write_text("4240 99\n")
    (d / "plan.json").write_text(json.dumps({
        "vcpus": 1, "max_vcpus": 2, "memory_mib": 2048, "max_memory_mib": 4096,
        "boot": "clone", "memory_hotplug": "virtio-mem",
        "numa": [{"guest_node": 0, "host_nodes": [0, 1]}],
        "pod": {"name": "web", "namespace": "default", "uid": "u-1"}}))
    if pinned is not None:
        (d / "placement.json").write_text(json.dumps({"pinned": pinned}))


def test_a_sandbox_is_read_from_its_records_proc_and_owner(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid in (4240, 4242, 4243):
        _proc(proc, pid, fds=pid - 4238)
    _sandbox(tmp_path / "run", "sb1")
    without = read_sandbox(str(tmp_path / "run"), "sb1", str(proc))
    assert without.guest is None and not without.guest_error  # starting: no socket yet
    (tmp_path / "run" / "sb1" / "metrics.sock").touch()  # a socket file nobody serves
    refused = read_sandbox(str(tmp_path / "run"), "sb1", str(proc))
    assert refused.guest is None and "metrics.sock" in refused.guest_error
    (tmp_path / "run" / "sb1" / "metrics.sock").unlink()
    server = _owner(tmp_path / "run" / "sb1" / "metrics.sock", {"guest": GUEST})
    try:
        s = read_sandbox(str(tmp_path / "run"), "sb1", str(proc))
    finally:
        server.shutdown()
        server.server_close()
    assert s.guest is not None and not s.guest_error
    assert s.guest.meminfo["memtotal"] == 2027000 * 1024
    assert s.guest.meminfo["hugepages_total"] == 0
    assert s.guest.cpu_seconds[("cpu0", "system")] == 0.8
    assert s.guest.load == {"load1": 0.08, "load5": 0.03, "load15": 0.01}
    assert s.guest.netdev[("eth0", "rx_bytes")] == 1500
    assert s.guest.netdev[("eth0", "tx_packets")] == 7
    assert (s.processes["agent"].fds, s.processes["agent"].utime_s) == (9, 2.5)
    assert sorted(without.processes) == ["hypervisor", "shim", "virtiofsd"]
    assert sorted(s.processes) == ["agent", "hypervisor", "shim", "virtiofsd"]
    assert (s.processes["hypervisor"].fds, s.processes["shim"].fds) == (4, 2)
    assert s.processes["hypervisor"].pss_bytes == 146512 * 1024
    assert (s.vcpus, s.memory_bytes) == ({"boot": 1, "max": 2},
                                         {"boot": 2048 << 20, "max": 4096 << 20})
    assert (s.boot, s.memory_hotplug, s.numa_nodes, s.pinned) == (
        "clone", "virtio-mem", {0: "0,1"}, True)
    assert read_process(4242, str(proc)).threads == 7


def _scrape(collector: SandboxCollector) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {s.name: [(x.labels, x.value) for x in fam.samples if x.name == s.name]
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_a_scrape_reports_live_sandboxes_and_counts_the_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    _sandbox(run, "good")
    _sandbox(run, "broken", pinned=None)
    (run / "broken" / "plan.json").write_text("[]")  # not an object: a read error
    proc = tmp_path / "proc"
    for pid in (4240, 4242, 4243):
        _proc(proc, pid)
    import pykata.sandbox.metrics as metrics

    monkeypatch.setattr(metrics, "running_sandboxes",
                        lambda root: [("broken", 4242), ("good", 4242)])
    real = metrics.read_sandbox
    monkeypatch.setattr("pykata.cli.monitor.read_sandbox",
                        lambda root, sid, _, timeout: real(root, sid, str(proc), timeout))
    server = _owner(run / "good" / "metrics.sock", {"guest": GUEST, "owner": OWNER})
    collector = SandboxCollector(str(run), deadline_s=5)
    try:
        first = _scrape(collector)
        second = _scrape(collector)
    finally:
        server.shutdown()
        server.server_close()
    assert first["pykata_running_sandboxes"] == [({}, 1.0)]
    assert first["pykata_hypervisor_fds"] == [(MINE, 3.0)]
    assert ({**MINE, "item": "utime"}, 250 / os.sysconf("SC_CLK_TCK")) in \
        first["pykata_hypervisor_proc_stat"]
    assert first["pykata_sandbox_info"] == [
        ({**MINE, "boot": "clone", "memory_hotplug": "virtio-mem"}, 1.0)]
    assert first["pykata_sandbox_vcpus_pinned"] == [(MINE, 1.0)]
    assert first["pykata_sandbox_guest_numa_node"] == [
        ({**MINE, "guest_node": "0", "host_nodes": "0,1"}, 1.0)]
    assert ({**MINE, "item": "memfree"}, 1972292 * 1024.0) in first["pykata_guest_meminfo"]
    assert ({**MINE, "interface": "eth0", "item": "rx_bytes"}, 1500.0) in \
        first["pykata_guest_netdev_stat"]
    assert first["pykata_agent_fds"] == [(MINE, 9.0)]
    assert first["pykata_sandbox_ready_seconds"] == [({**MINE, "boot": "clone"}, 0.8)]
    assert ({**MINE, "kind": "current"}, 2.0) in first["pykata_sandbox_vcpus"]
    assert ({**MINE, "kind": "current"}, 2560 * 1024.0 ** 2) in \
        first["pykata_sandbox_memory_bytes"]
    buckets = {labels["le"]: v for labels, v in first["pykata_hotplug_duration_seconds_bucket"]
               if labels["op"] == "cpu" and labels["direction"] == "grow"}
    assert (buckets["0.5"], buckets["1.0"], buckets["+Inf"]) == (0.0, 2.0, 2.0)
    assert first["pykata_hotplug_duration_seconds_sum"] == [
        ({**MINE, "op": "cpu", "direction": "grow"}, 1.5)]
    rpc = {labels["le"]: v for labels, v in
           first["pykata_shim_rpc_durations_histogram_milliseconds_bucket"]
           if labels["action"] == "Create"}
    assert (rpc["100.0"], rpc["500.0"], rpc["+Inf"]) == (0.0, 1.0, 1.0)
    assert "pykata_agent_pss_bytes" not in first  # the guest has no smaps to give
    assert first["pykata_monitor_scrape_errors_total"] == [({"sandbox_id": "broken"}, 1.0)]
    assert second["pykata_monitor_scrape_errors_total"] == [({"sandbox_id": "broken"}, 2.0)]


def test_a_sandbox_past_the_deadline_is_an_error_not_a_failed_scrape(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    release = threading.Event()

    def hung(*_: object) -> None:
        release.wait(10)
        raise OSError("gone")

    monkeypatch.setattr("pykata.cli.monitor.sandbox_ids", lambda root: ["hung"])
    monkeypatch.setattr("pykata.cli.monitor.read_sandbox", hung)
    try:
        scraped = _scrape(SandboxCollector(str(tmp_path), deadline_s=0.2))
    finally:
        release.set()
    assert scraped["pykata_running_sandboxes"] == [({}, 0.0)]
    assert scraped["pykata_monitor_scrape_errors_total"] == [({"sandbox_id": "hung"}, 1.0)]


@pytest.mark.parametrize("bad", ["8090", ":8090", "host:", "host:http", "h:70000"])
def test_listen_names_the_bad_value(bad: str) -> None:
    with pytest.raises(ConfigError, match="--listen"):
        parse_listen(bad)
    assert parse_listen("[::1]:9000") == ("::1", 9000)


def test_the_state_roots_own_files_are_no_sandboxes(tmp_path: Path) -> None:
    from pykata.sandbox.inspect import running_sandboxes

    (tmp_path / ".sweep.lock").touch()  # the orphan sweep's lock: a file
    (tmp_path / ".template").mkdir()    # the VM template
    (tmp_path / ".template" / "pids").write_text(f"qemu {os.getpid()}\n")
    assert running_sandboxes(str(tmp_path)) == []


def test_a_cri_pods_identity_comes_from_its_annotations() -> None:
    from pykata.plan.sandbox import pod_labels

    annotations = {"io.kubernetes.cri.sandbox-name": "web",
                   "io.kubernetes.cri.sandbox-namespace": "default",
                   "io.kubernetes.cri.sandbox-uid": "u-1",
                   "io.kubernetes.cri.container-type": "sandbox"}
    assert pod_labels(annotations) == (("name", "web"), ("namespace", "default"),
                                       ("uid", "u-1"))
    assert pod_labels({}) == () and pod_labels(["not", "an", "object"]) == ()


def test_the_shims_rpcs_are_timed_by_method() -> None:
    import asyncio

    from pykata.shim.server import _timed

    async def answer(payload: bytes) -> bytes:
        await asyncio.sleep(0.01)
        return payload

    stats = OwnerStats()

    async def call() -> bytes:
        return await _timed("State", answer, stats)(b"x")

    assert asyncio.run(call()) == b"x"
    h = stats.rpc["State"]
    assert sum(h.counts) == 1 and 10 <= h.total < 1000 and h.counts[0] == 0  # ms, above 1
