"""`pykata monitor`'s collectors against recorded /proc files and a state directory laid out
as a running sandbox leaves it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from pykata.cli.monitor import SandboxCollector, parse_listen
from pykata.domain.errors import ConfigError
from pykata.host.procstat import parse_pss, parse_stat, parse_status, read_process
from pykata.sandbox.metrics import read_sandbox

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


def _sandbox(state: Path, sandbox_id: str, pinned: bool | None = True) -> None:
    d = state / sandbox_id
    d.mkdir(parents=True)
    (d / "pids").write_text("qemu 4242\nvirtiofsd 4243\n")
    (d / "owner").write_text("4240 99\n")
    (d / "plan.json").write_text(json.dumps({
        "vcpus": 1, "max_vcpus": 2, "memory_mib": 2048, "max_memory_mib": 4096,
        "boot": "clone", "memory_hotplug": "virtio-mem",
        "numa": [{"guest_node": 0, "host_nodes": [0, 1]}]}))
    if pinned is not None:
        (d / "placement.json").write_text(json.dumps({"pinned": pinned}))


def test_a_sandbox_is_read_from_its_records_and_proc(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid in (4240, 4242, 4243):
        _proc(proc, pid, fds=pid - 4238)
    _sandbox(tmp_path / "run", "sb1")
    s = read_sandbox(str(tmp_path / "run"), "sb1", str(proc))
    assert sorted(s.processes) == ["hypervisor", "shim", "virtiofsd"]
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
                        lambda root, sid: real(root, sid, str(proc)))
    collector = SandboxCollector(str(run), deadline_s=5)
    first = _scrape(collector)
    assert first["pykata_running_sandboxes"] == [({}, 1.0)]
    assert first["pykata_hypervisor_fds"] == [({"sandbox_id": "good"}, 3.0)]
    assert ({"sandbox_id": "good", "item": "utime"}, 250 / os.sysconf("SC_CLK_TCK")) in \
        first["pykata_hypervisor_proc_stat"]
    assert first["pykata_sandbox_info"] == [
        ({"sandbox_id": "good", "boot": "clone", "memory_hotplug": "virtio-mem"}, 1.0)]
    assert first["pykata_sandbox_vcpus_pinned"] == [({"sandbox_id": "good"}, 1.0)]
    assert first["pykata_sandbox_guest_numa_node"] == [
        ({"sandbox_id": "good", "guest_node": "0", "host_nodes": "0,1"}, 1.0)]
    assert first["pykata_monitor_scrape_errors_total"] == [({"sandbox_id": "broken"}, 1.0)]
    second = _scrape(collector)
    assert second["pykata_monitor_scrape_errors_total"] == [({"sandbox_id": "broken"}, 2.0)]


def test_a_sandbox_past_the_deadline_is_an_error_not_a_failed_scrape(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    release = threading.Event()

    def hung(root: str, sandbox_id: str) -> None:
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
