"""A template's save and a clone's restore over QMP, the devices a clone gets by hotplug,
and the copy of guest RAM between a memfd and the template's file.

QMP steps as checked on this machine (FACTS §7): save with `x-ignore-shared` (guest RAM is
a shared file, so only device state goes into the stream), restore the same way into a
QEMU started with `-incoming defer`. Every QMP failure is a VmmError naming the command.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Sequence
from typing import Any

from pykata.domain.contract import SHARED_TAG
from pykata.domain.errors import VmmError
from pykata.plan.network import NetworkPlan
from pykata.plan.vm import FS_PORT, NIC_PORTS
from pykata.vmm.hotplug import execute

IGNORE_SHARED = {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}
MIGRATION_TIMEOUT = 60.0
_POLL = 0.005
_CHUNK = 1 << 20
_PAGE = 4096
_ZERO = bytes(_CHUNK)


async def save_state(qmp: Any, path: str) -> None:
    """Pause the VM and write its device state to `path` (RAM stays in its file)."""
    await execute(qmp, "stop")
    await execute(qmp, "migrate-set-capabilities", IGNORE_SHARED)
    await execute(qmp, "migrate", {"uri": f"exec:cat > {_quoted(path)}"})
    await _wait_status(qmp, "query-migrate", "completed")


async def restore_state(qmp: Any, path: str) -> None:
    """Load the device state at `path` into a QEMU waiting with `-incoming defer`, then run."""
    await execute(qmp, "migrate-set-capabilities", IGNORE_SHARED)
    await execute(qmp, "migrate-incoming", {"uri": f"exec:cat {_quoted(path)}"})
    await _wait_status(qmp, "query-status", "paused")
    await execute(qmp, "cont")


def _quoted(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"


async def _wait_status(qmp: Any, command: str, want: str) -> None:
    deadline = time.monotonic() + MIGRATION_TIMEOUT
    while True:
        reply = await execute(qmp, command)
        status = reply.get("status") if isinstance(reply, dict) else None
        if status == want:
            return
        if status in ("failed", "cancelled", "internal-error", "shutdown") \
                or time.monotonic() > deadline:
            detail = reply.get("error-desc", "") if isinstance(reply, dict) else ""
            raise VmmError(f"QMP {command}: status {status!r}, not {want!r} {detail}".strip())
        await asyncio.sleep(_POLL)


async def plug_shared_fs(qmp: Any, socket_path: str, bus: str = "pci") -> None:
    """virtiofsd's socket as a chardev, then vhost-user-fs on the spare root port."""
    await execute(qmp, "chardev-add", {"id": "fs0", "backend": {"type": "socket", "data": {
        "addr": {"type": "unix", "data": {"path": socket_path}}, "server": False}}})
    await execute(qmp, "device_add", {"driver": f"vhost-user-fs-{bus}", "id": "fs0dev",
                                      "chardev": "fs0", "tag": SHARED_TAG,
                                      "queue-size": 1024, "bus": FS_PORT})


async def plug_nics(qmp: Any, plan: NetworkPlan, tap_fds: Sequence[int],
                    bus: str = "pci") -> None:
    """Each NIC: its tap fd sent over QMP (SCM_RIGHTS), a tap netdev on it, then the
    virtio-net device on its spare root port, as the cold boot's argv would have it."""
    for nic, fd, port in zip(plan.nics, tap_fds, NIC_PORTS, strict=False):
        qmp.send_fd_scm(fd)
        await execute(qmp, "getfd", {"fdname": nic.netdev_id})
        await execute(qmp, "netdev_add", {"type": "tap", "id": nic.netdev_id,
                                          "fd": nic.netdev_id, "vhost": False})
        await execute(qmp, "device_add", {
            "driver": f"virtio-net-{bus}", "id": nic.device_id, "netdev": nic.netdev_id,
            "mac": nic.interface.mac, "host_mtu": nic.interface.mtu, "romfile": "",
            "bus": port})


def _extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The (start, end) ranges of `fd` that hold data: holes are skipped."""
    out, offset = [], 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data past offset
                break
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, end))
        offset = end
    return out


def copy_ram(src: int, dst: int, size: int) -> int:
    """Copy guest RAM from fd `src` to fd `dst` (both `size` bytes), sparsely: holes and
    all-zero pages are not written, so `dst` stays a hole there (a clone's copy of it then
    allocates nothing there either). Returns the bytes written."""
    written = 0
    for start, end in _extents(src, size):
        offset = start
        while offset < end:
            data = os.pread(src, min(_CHUNK, end - offset), offset)
            if not data:
                break
            if data != _ZERO[:len(data)]:
                for first, last in _nonzero_runs(data):
                    os.pwrite(dst, data[first:last], offset + first)
                    written += last - first
            offset += len(data)
    return written


def _nonzero_runs(data: bytes) -> list[tuple[int, int]]:
    """The (start, end) byte ranges of `data` made of pages that are not all zero."""
    runs: list[tuple[int, int]] = []
    zero = _ZERO[:_PAGE]
    for at in range(0, len(data), _PAGE):
        if data[at:at + _PAGE] == zero[:len(data) - at]:
            continue
        if runs and runs[-1][1] == at:
            runs[-1] = (runs[-1][0], min(at + _PAGE, len(data)))
        else:
            runs.append((at, min(at + _PAGE, len(data))))
    return runs


def copy_extents(src: int, dst: int, size: int) -> int:
    """Copy `src`'s data extents into `dst` in the kernel (sendfile: no user-space copy, no
    GIL held), for a template's RAM file, whose zeros are already holes. Returns bytes."""
    written = 0
    for start, end in _extents(src, size):
        offset = start
        while offset < end:
            os.lseek(dst, offset, os.SEEK_SET)
            sent = os.sendfile(dst, src, offset, end - offset)
            if sent <= 0:
                raise VmmError(f"guest RAM copy stopped at {offset} of {end} bytes")
            offset += sent
            written += sent
    return written


# The x86 boot protocol: setup sectors at 0x1f1 (0 means 4), "HdrS" at 0x202.
_SETUP_SECTS, _HDRS_AT, _HDRS = 0x1F1, 0x202, b"HdrS"


def write_kernel_stub(kernel: str, out: str) -> int:
    """A clone's -kernel: a bzImage's setup code and header (what QEMU parses) and one
    zero page for a body. Anything else is copied whole. Returns the bytes written."""
    with open(kernel, "rb") as f:
        data = f.read()
    if data[_HDRS_AT:_HDRS_AT + 4] == _HDRS:
        data = data[:((data[_SETUP_SECTS] or 4) + 1) * 512] + bytes(_PAGE)
    with open(out, "wb") as f:
        f.write(data)
    return len(data)


def ram_memfd(name: str, size: int) -> int:
    """A memfd of `size` bytes for guest RAM; the caller closes it."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd
