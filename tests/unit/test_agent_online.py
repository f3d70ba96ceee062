"""OnlineCPUMem in the guest: onlining what is offline, and the bounded wait both ways."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pykata.agent import hotplug
from pykata.agent.hotplug import (
    find_offline,
    online_cpu_mem,
    plan_wanted,
    wanted_met,
)
from pykata.domain.contract import SHRINK_SLACK_BYTES

MiB = 1 << 20


def tree(root: Path, cpus: dict[str, str], memory: dict[str, str], online: str,
         mem_kib: int) -> tuple[str, str]:
    sys, proc = root / "sys", root / "proc"
    for name, state in cpus.items():
        (sys / "devices/system/cpu" / name).mkdir(parents=True)
        if state:
            (sys / "devices/system/cpu" / name / "online").write_text(state + "\n")
    (sys / "devices/system/cpu/online").write_text(online + "\n")
    for name, state in memory.items():
        (sys / "devices/system/memory" / name).mkdir(parents=True)
        (sys / "devices/system/memory" / name / "state").write_text(state + "\n")
    proc.mkdir()
    (proc / "meminfo").write_text(f"MemTotal:       {mem_kib} kB\nMemFree: 1 kB\n")
    return str(proc), str(sys)


def test_find_offline(tmp_path: Path) -> None:
    _, sys = tree(tmp_path, {"cpu0": "", "cpu1": "0", "cpu2": "1", "cpufreq": "0"},
                  {"memory0": "online", "memory9": "offline"}, "0,2", 1024)
    assert sorted(find_offline(sys)) == [
        (f"{sys}/devices/system/cpu/cpu1/online", "1"),
        (f"{sys}/devices/system/memory/memory9/state", "online")]


@pytest.mark.parametrize(("want", "start", "cpus", "mem", "met"), [
    ((2, 0), 100, 2, 100, True),
    ((2, 0), 100, 1, 100, False),
    ((0, 768), 256, 1, 700, False),
    ((0, 768), 256, 1, 768, True),
    ((0, 256), 768, 1, 300, False),
    ((0, 256), 768, 1, 259, True),
    ((1, 256), 768, 2, 256, False),
], ids=["cpus met", "cpus short", "growing", "grown", "shrinking", "shrunk within slack",
        "shrunk but a CPU left"])
def test_wanted_met(want: tuple[int, int], start: int, cpus: int, mem: int,
                    met: bool) -> None:
    wanted = plan_wanted(want[0], want[1] * MiB, start * MiB)
    assert wanted_met(wanted, cpus, mem * MiB) is met
    assert 4 * MiB == SHRINK_SLACK_BYTES


def test_onlines_then_reports(tmp_path: Path) -> None:
    proc, sys = tree(tmp_path, {"cpu0": "", "cpu1": "0"}, {"memory5": "offline"}, "0-1",
                     768 * 1024)
    cpus, mem = asyncio.run(online_cpu_mem(2, 768 * MiB, 1000, proc, sys))
    assert (cpus, mem) == (2, 768 * MiB)
    assert (tmp_path / "sys/devices/system/cpu/cpu1/online").read_text() == "1"
    assert (tmp_path / "sys/devices/system/memory/memory5/state").read_text() == "online"


def test_times_out_with_what_it_sees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc, sys = tree(tmp_path, {"cpu0": ""}, {}, "0", 256 * 1024)
    monkeypatch.setattr(hotplug, "POLL_INTERVAL", 0.001)
    cpus, mem = asyncio.run(online_cpu_mem(2, 768 * MiB, 30, proc, sys))
    assert (cpus, mem) == (1, 256 * MiB)
