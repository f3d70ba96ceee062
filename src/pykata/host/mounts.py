"""Mounts on the host, through libc (no `mount` processes)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from pykata.domain.errors import HostError

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
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


# mount(8) options that are flags; the rest go to the filesystem as data.
_FLAGS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
          "bind": MS_BIND, "rbind": MS_BIND | MS_REC}
_CLEARED = {"rw", "suid", "dev", "exec", "defaults"}


def mount_flags(options: list[str]) -> tuple[int, str]:
    """(flags, data) for mount(2) from mount(8)-style options."""
    flags, data = 0, []
    for opt in options:
        if opt in _FLAGS:
            flags |= _FLAGS[opt]
        elif opt not in _CLEARED:
            data.append(opt)
    return flags, ",".join(data)


def mount(fstype: str, source: str, target: str, options: list[str]) -> None:
    """Mount as containerd describes a mount (type, source, options)."""
    flags, data = mount_flags(options)
    if flags & MS_BIND:  # read-only takes a remount after a bind
        bind_mount(source, target, readonly=bool(flags & MS_RDONLY))
        return
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() or None, flags,
                       data.encode() or None),
           f"mount -t {fstype} {source} on {target} (options {','.join(options)})")


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
