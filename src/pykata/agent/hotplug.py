"""Online hot-plugged CPUs and memory as the kernel announces them (PID 1 only).

The guest kernel leaves hot-added CPUs offline, and memory blocks too unless
auto_online_blocks says otherwise; with no udev in the guest, the agent does udev's job.
At boot it sets auto_online_blocks to "online" (the kernel then onlines new memory
itself); a kobject-uevent netlink socket reports each added CPU or memory block, which
is onlined through sysfs. `plan_online` decides from the message alone (pure).

OnlineCPUMem (`online_cpu_mem`) is the host's check after it hot-plugs or unplugs: online
whatever is still offline, then wait, bounded, until the guest sees what the host asked for.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import socket
import time
from typing import NamedTuple

from pykata.agent.console import log
from pykata.agent.guest import parse_cpu_list, parse_mem_total
from pykata.domain.contract import SHRINK_SLACK_BYTES

_NETLINK_KOBJECT_UEVENT = 15
_AUTO_ONLINE = "/sys/devices/system/memory/auto_online_blocks"
_CPU = re.compile(r"cpu[0-9]+\Z")
_MEMORY = re.compile(r"memory[0-9]+\Z")
# A shrink is met within this much of the target: the host's figure is an estimate from
# the MemTotal it saw last, and the guest rounds what it hands back to whole pages.
DEFAULT_TIMEOUT_MS = 10_000
MAX_TIMEOUT_MS = 120_000
POLL_INTERVAL = 0.02


def plan_online(message: bytes, sys_root: str = "/sys") -> tuple[str, str] | None:
    """(sysfs file, value) that onlines what an "add" uevent announces, else None."""
    fields = dict(item.split("=", 1) for item in message.decode(errors="replace").split("\0")
                  if "=" in item)
    if fields.get("ACTION") != "add" or "DEVPATH" not in fields:
        return None
    devpath = fields["DEVPATH"]
    if fields.get("SUBSYSTEM") == "cpu" and devpath.startswith("/devices/system/cpu/cpu"):
        return f"{sys_root}{devpath}/online", "1"
    if fields.get("SUBSYSTEM") == "memory" and devpath.startswith("/devices/system/memory/"):
        return f"{sys_root}{devpath}/state", "online"
    return None


def apply_online(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        # EINVAL/EBUSY: already online (the kernel or a racing event got there first).
        if exc.errno not in (errno.EINVAL, errno.EBUSY, errno.ENOENT):
            log(f"hotplug: cannot write {value!r} to {path}: {exc}")
        return
    log(f"hotplug: {path} <- {value}")


def start_onliner(loop: asyncio.AbstractEventLoop) -> socket.socket | None:
    """Sets memory auto-onlining and starts the CPU/memory uevent listener."""
    try:
        with open(_AUTO_ONLINE, "w") as f:
            f.write("online")
    except OSError as exc:
        log(f"hotplug: {_AUTO_ONLINE}: {exc}")
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_KOBJECT_UEVENT)
        sock.bind((0, 1))  # multicast group 1: kernel uevents
    except OSError as exc:
        log(f"hotplug: no uevent socket, hot-added CPUs stay offline: {exc}")
        return None
    sock.setblocking(False)
    loop.add_reader(sock.fileno(), _on_uevents, sock)
    return sock


def _on_uevents(sock: socket.socket) -> None:
    while True:
        try:
            message = sock.recv(16384)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # ENOBUFS: events were lost; later ones still come
            log(f"hotplug: uevent socket: {exc}")
            return
        plan = plan_online(message)
        if plan is not None:
            apply_online(*plan)


class Wanted(NamedTuple):
    cpus: int           # 0: any
    mem_bytes: int      # 0: any
    grow: bool          # memory: wait for MemTotal >= mem_bytes, else <= mem_bytes + slack


def plan_wanted(cpus: int, mem_bytes: int, mem_now: int) -> Wanted:
    """The direction comes from where MemTotal stands when the request arrives."""
    return Wanted(cpus, mem_bytes, mem_bytes >= mem_now)


def wanted_met(want: Wanted, cpus: int, mem_bytes: int) -> bool:
    if want.cpus and cpus != want.cpus:
        return False
    if not want.mem_bytes:
        return True
    if want.grow:
        return mem_bytes >= want.mem_bytes
    return mem_bytes <= want.mem_bytes + SHRINK_SLACK_BYTES


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def find_offline(sys_root: str = "/sys") -> list[tuple[str, str]]:
    """(sysfs file, value) for each present CPU and memory block that is offline."""
    found = []
    for kind, pattern, offline, online in (("cpu", _CPU, "0", "1"),
                                           ("memory", _MEMORY, "offline", "online")):
        base = f"{sys_root}/devices/system/{kind}"
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            path = f"{base}/{name}/{'online' if kind == 'cpu' else 'state'}"
            if pattern.match(name) and _read(path) == offline:
                found.append((path, online))
    return found


def observe(proc: str = "/proc", sys_root: str = "/sys") -> tuple[int, int]:
    """(online CPUs, MemTotal bytes) as the guest kernel sees them now."""
    cpus = _read(f"{sys_root}/devices/system/cpu/online")
    meminfo = _read(f"{proc}/meminfo")
    return (parse_cpu_list(cpus) if cpus else 0,
            parse_mem_total(meminfo) if meminfo else 0)


async def online_cpu_mem(cpus: int, mem_bytes: int, timeout_ms: int, proc: str = "/proc",
                         sys_root: str = "/sys") -> tuple[int, int]:
    """Online what is offline until the guest sees `cpus` CPUs and `mem_bytes` of MemTotal,
    or the timeout passes; returns what it sees then. A CPU being unplugged is offlined by
    the kernel's ACPI eject, not here: only the CPU count is waited for."""
    timeout = min(timeout_ms or DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS) / 1000
    deadline = time.monotonic() + timeout
    seen = observe(proc, sys_root)
    want = plan_wanted(cpus, mem_bytes, seen[1])
    while True:
        for path, value in find_offline(sys_root):
            apply_online(path, value)
        seen = observe(proc, sys_root)
        if wanted_met(want, *seen) or time.monotonic() >= deadline:
            return seen
        await asyncio.sleep(POLL_INTERVAL)
