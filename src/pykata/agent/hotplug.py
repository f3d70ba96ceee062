"""Online hot-plugged CPUs and memory as the kernel announces them (PID 1 only).

The guest kernel leaves hot-added CPUs offline, and memory blocks too unless
auto_online_blocks says otherwise; with no udev in the guest, the agent does udev's job.
At boot it sets auto_online_blocks to "online" (the kernel then onlines new memory
itself); a kobject-uevent netlink socket reports each added CPU or memory block, which
is onlined through sysfs. `plan_online` decides from the message alone (pure).
"""

from __future__ import annotations

import asyncio
import errno
import socket

from pykata.agent.console import log

_NETLINK_KOBJECT_UEVENT = 15
_AUTO_ONLINE = "/sys/devices/system/memory/auto_online_blocks"


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
