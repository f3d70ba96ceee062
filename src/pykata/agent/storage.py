"""Storages the host asks for, as mount plans; and the guest system calls behind them.

`plan_mount` is pure (Storage -> MountPlan, errors naming the bad field). `GuestSystem`
performs mounts and the hostname change; tests substitute a recording fake, so nothing
here touches the host a test runs on.
"""

from __future__ import annotations

import errno
import os
import posixpath
import time
from typing import NamedTuple, Protocol

from pykata.agent import linux
from pykata.domain.errors import BadValue


class Storage(NamedTuple):
    driver: str
    source: str
    fstype: str
    options: tuple[str, ...]
    mount_point: str


class MountPlan(NamedTuple):
    source: str
    target: str
    fstype: str
    flags: int
    data: str


_FLAG_OPTIONS = {
    "ro": linux.MS_RDONLY, "nosuid": linux.MS_NOSUID, "nodev": linux.MS_NODEV,
    "noexec": linux.MS_NOEXEC, "relatime": linux.MS_RELATIME,
}
_NEUTRAL_OPTIONS = {"rw", "defaults"}
# driver -> the filesystem type it mounts; the source is the driver's own name for it.
_DRIVERS = {"virtiofs": "virtiofs"}


def plan_mount(storage: Storage) -> MountPlan:
    fstype = _DRIVERS.get(storage.driver)
    if fstype is None:
        raise BadValue("storage.driver", storage.driver, f"supported: {', '.join(_DRIVERS)}")
    if storage.fstype and storage.fstype != fstype:
        raise BadValue("storage.fstype", storage.fstype, f"driver {storage.driver} mounts {fstype}")
    if not storage.source:
        raise BadValue("storage.source", storage.source, "must name the virtiofs tag")
    if not posixpath.isabs(storage.mount_point) or ".." in storage.mount_point.split("/"):
        raise BadValue("storage.mount_point", storage.mount_point, "must be an absolute path")
    flags, data = 0, []
    for opt in storage.options:
        if opt in _FLAG_OPTIONS:
            flags |= _FLAG_OPTIONS[opt]
        elif opt not in _NEUTRAL_OPTIONS:
            data.append(opt)
    return MountPlan(storage.source, posixpath.normpath(storage.mount_point), fstype, flags,
                     ",".join(data))


# How long a virtio-fs tag may take to appear after its device was hot-plugged.
DEVICE_WAIT_S = 10.0


class System(Protocol):
    def mount(self, plan: MountPlan) -> None: ...
    def unmount(self, target: str) -> None: ...
    def set_hostname(self, name: str) -> None: ...


class GuestSystem:
    """The real thing: only ever used inside the VM."""

    def mount(self, plan: MountPlan) -> None:
        os.makedirs(plan.target, exist_ok=True)
        deadline = time.monotonic() + DEVICE_WAIT_S
        while True:
            try:
                linux.mount(plan.source, plan.target, plan.fstype, plan.flags, plan.data)
                return
            except OSError as exc:
                # A hot-plugged device (a cloned VM's shared fs) is probed a moment after
                # the host added it; until then the kernel knows no such tag.
                if (plan.fstype != "virtiofs" or exc.errno not in (errno.EINVAL, errno.ENOENT)
                        or time.monotonic() > deadline):
                    raise
            time.sleep(0.01)

    def unmount(self, target: str) -> None:
        linux.umount(target, linux.MNT_DETACH)

    def set_hostname(self, name: str) -> None:
        import socket

        socket.sethostname(name)
