"""Thin ctypes wrappers for the Linux syscalls Python's os module lacks.

mount, umount2, finit_module, reboot and prctl(PR_SET_CHILD_SUBREAPER): one call each,
raising OSError with the errno and the path involved. libc is loaded on first use so that
importing this module costs nothing. Decides nothing: callers choose what to mount or load.
"""

from __future__ import annotations

import os
from typing import Any

# mount(2) flags.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_RELATIME = 0x200000
MNT_DETACH = 0x2

_SYS_FINIT_MODULE = {"x86_64": 313, "aarch64": 273, "s390x": 344, "ppc64le": 353}
_RB_POWER_OFF = 0x4321FEDC
_PR_SET_CHILD_SUBREAPER = 36

_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        import ctypes  # deferred: ~5 ms natively, several times that under TCG

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str, path: str | None = None) -> None:
    if result < 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    res = _lib().mount(source.encode(), target.encode(), fstype.encode(), flags,
                       data.encode() if data else None)
    _check(res, f"mount -t {fstype} {source}", target)


def umount(target: str, flags: int = 0) -> None:
    _check(_lib().umount2(target.encode(), flags), "umount", target)


def finit_module(path: str, params: str = "") -> None:
    """Load a kernel module from an open file: no fork, unlike `insmod`."""
    nr = _SYS_FINIT_MODULE.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"finit_module: no syscall number for {os.uname().machine}", path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_lib().syscall(nr, fd, params.encode(), 0), "finit_module", path)
    finally:
        os.close(fd)


def power_off() -> None:
    """reboot(RB_POWER_OFF); returns only if the kernel refused."""
    os.sync()
    _check(_lib().reboot(_RB_POWER_OFF), "reboot(RB_POWER_OFF)")


def set_child_subreaper(on: bool) -> None:
    """Orphans (a container's init after `crun create` exits) re-parent to us, not PID 1."""
    _check(_lib().prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0), "prctl(SUBREAPER)")
