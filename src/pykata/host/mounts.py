"""Bind mounts on the host, through libc (no `mount` processes)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from pykata.domain.errors import HostError

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise HostError(f"{what}: {os.strerror(err)}")


def bind_mount(source: str, target: str, readonly: bool = False) -> None:
    _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None),
           f"bind mount {source} on {target}")
    if readonly:
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        try:
            _check(_libc.mount(None, target.encode(), None, flags, None),
                   f"remount {target} read-only")
        except HostError:
            unmount(target)
            raise


def unmount(target: str) -> None:
    """Unmount, lazily if busy: a leftover mount is worse than a deferred one."""
    if _libc.umount2(target.encode(), 0) == 0:
        return
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"unmount {target}")


def make_shared_bind(path: str) -> None:
    """Bind `path` onto itself with shared propagation, so mounts made under it later also
    appear inside virtiofsd's mount namespace (a slave copy)."""
    bind_mount(path, path)
    try:
        _check(_libc.mount(None, path.encode(), None, MS_SHARED, None),
               f"make {path} shared")
    except HostError:
        unmount(path)
        raise
