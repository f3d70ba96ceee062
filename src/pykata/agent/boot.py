"""PID 1 duties before serving: mount the API filesystems, load modules, enable cgroups.

Runs only as the VM's init (never on a host: it mounts over /proc, /sys, /dev, /run and
/tmp). Mounts and module loads are direct syscalls through ctypes, not busybox children:
under TCG every fork+exec costs milliseconds, one ctypes import costs them once.
What to mount is the data in `BOOT_MOUNTS`; `apply_*` functions only carry it out.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Sequence

from pykata.agent import linux
from pykata.agent.console import log, write_console
from pykata.agent.storage import MountPlan

_NSD = linux.MS_NOSUID | linux.MS_NODEV
BOOT_MOUNTS = (
    MountPlan("proc", "/proc", "proc", _NSD | linux.MS_NOEXEC, ""),
    MountPlan("sysfs", "/sys", "sysfs", _NSD | linux.MS_NOEXEC, ""),
    MountPlan("devtmpfs", "/dev", "devtmpfs", linux.MS_NOSUID, "mode=0755"),
    MountPlan("devpts", "/dev/pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
              "gid=5,mode=0620,ptmxmode=0666"),
    MountPlan("shm", "/dev/shm", "tmpfs", _NSD, "mode=1777"),
    MountPlan("tmpfs", "/run", "tmpfs", _NSD, "mode=0755"),
    MountPlan("tmpfs", "/tmp", "tmpfs", _NSD, "mode=1777"),
    MountPlan("cgroup2", "/sys/fs/cgroup", "cgroup2", _NSD | linux.MS_NOEXEC | linux.MS_RELATIME,
              ""),
)
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The virtio bus and its PCI transport: loaded first, so the devices show up.
CORE_MODULES = frozenset({"virtio_ring", "virtio", "virtio_pci_legacy_dev",
                          "virtio_pci_modern_dev", "virtio_pci"})
# Modules each virtio device needs, by the virtio spec's device id. Loading only these
# keeps boot short (each module costs ~20 ms under TCG): no vsock without a vsock device.
DEVICE_MODULES: dict[int, frozenset[str]] = {
    1: frozenset({"failover", "net_failover", "virtio_net"}),
    3: frozenset({"virtio_console"}),
    5: frozenset({"virtio_balloon"}),
    19: frozenset({"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"}),
    24: frozenset({"virtio_mem"}),
    26: frozenset({"fuse", "virtiofs"}),
}


def module_name(path: str) -> str:
    return os.path.basename(path).removesuffix(".ko").replace("-", "_")


def plan_boot_modules(paths: Sequence[str], devices: set[int]) -> list[str]:
    """The non-core modules to load for the present virtio `devices`, in the given
    (dependency) order. Modules no table knows are loaded too: better slow than missing."""
    known = set(CORE_MODULES)
    wanted: set[str] = set()
    for device, names in DEVICE_MODULES.items():
        known |= names
        if device in devices:
            wanted |= names
    return [p for p in paths
            if module_name(p) in wanted or module_name(p) not in known]


# The kernel command line names virtio devices that will come by hotplug (a template VM's
# shared filesystem and NICs): their modules load at boot, as nothing loads them later.
HOTPLUG_PARAM = "pykata.hotplug="


def hotplug_devices(cmdline: str) -> set[int]:
    """`pykata.hotplug=1,26` -> {1, 26}; anything unparsable is ignored (and logged)."""
    found: set[int] = set()
    for word in cmdline.split():
        if word.startswith(HOTPLUG_PARAM):
            for item in word.removeprefix(HOTPLUG_PARAM).split(","):
                if item.isdigit():
                    found.add(int(item))
                else:
                    log(f"{HOTPLUG_PARAM}: ignoring {item!r}")
    return found


def read_virtio_devices(sys_root: str = "/sys") -> set[int]:
    base = f"{sys_root}/bus/virtio/devices"
    found = set()
    for dev in os.listdir(base) if os.path.isdir(base) else ():
        try:
            with open(f"{base}/{dev}/device") as f:
                found.add(int(f.read().strip(), 16))
        except (OSError, ValueError):
            continue
    return found


def apply_mounts(plans: Sequence[MountPlan]) -> None:
    """Skips a target that is already a mount point (the DAX image's init moves /dev)."""
    for plan in plans:
        os.makedirs(plan.target, exist_ok=True)
        if os.path.ismount(plan.target):
            continue
        try:
            linux.mount(plan.source, plan.target, plan.fstype, plan.flags, plan.data)
        except OSError as exc:
            if exc.errno != errno.EBUSY:  # EBUSY: the kernel mounted it already
                raise


def apply_movable_root(mountpoint: str = "/.pykata-root") -> None:
    """Make / a bind mount of the initramfs instead of the initramfs (rootfs) mount itself.

    pivot_root(2) fails with EINVAL while the caller's root is rootfs, and crun and runc
    pivot into every container. A bind mount moved over / (what switch_root does) has a
    parent mount, so pivot_root works in the containers' mount namespaces.
    """
    os.makedirs(mountpoint, exist_ok=True)
    linux.mount("/", mountpoint, "", linux.MS_BIND | linux.MS_REC)
    os.chdir(mountpoint)
    linux.mount(".", "/", "", linux.MS_MOVE)
    os.chroot(".")
    os.chdir("/")
    os.rmdir(mountpoint)


def root_is_image() -> bool:
    """True when / is the read-only DAX image, false when it is the initramfs."""
    return bool(os.statvfs("/").f_flag & os.ST_RDONLY)


def apply_writable_etc(etc: str = "/etc") -> None:
    """On the read-only image, /etc becomes a tmpfs holding copies of the image's files:
    the agent writes hosts, hostname and resolv.conf there."""
    files: dict[str, tuple[bytes, int]] = {}
    for dirpath, _, names in os.walk(etc):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, etc)] = (f.read(), os.stat(path).st_mode & 0o7777)
    linux.mount("tmpfs", etc, "tmpfs", _NSD, "mode=0755")
    for rel, (data, mode) in files.items():
        path = os.path.join(etc, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with open(fd, "wb") as f:
            f.write(data)


def ensure_stdio() -> None:
    """The kernel gives init no fds 0-2 when the initramfs lacks /dev/console: open it now,
    so that pipes never land on 0-2 and tracebacks reach the console."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                new = os.open("/dev/console", os.O_RDWR | os.O_NOCTTY)
            except OSError:
                new = os.open(os.devnull, os.O_RDWR)
            if new != fd:
                os.dup2(new, fd)
                os.close(new)
    if sys.stdout is None:
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def load_modules(paths: Sequence[str]) -> None:
    """In the given (dependency) order; already-loaded ones are fine; failures are logged
    (the agent then says which port it still waits for) rather than fatal."""
    for path in paths:
        try:
            linux.finit_module(path)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                continue
            if exc.errno == errno.ENOSYS:
                _insmod(path)
                continue
            log(f"module {path}: {exc}")


def _insmod(path: str) -> None:
    pid = os.posix_spawn("/bin/busybox", ["insmod", path], os.environ)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        log(f"module {path}: busybox insmod failed ({status:#x})")


def enable_cgroup_controllers(root: str = "/sys/fs/cgroup") -> None:
    """Delegate every available controller to child cgroups, where crun puts containers."""
    with open(f"{root}/cgroup.controllers") as f:
        available = f.read().split()
    try:
        _write(f"{root}/cgroup.subtree_control", " ".join(f"+{c}" for c in available))
    except OSError:  # one refused controller fails the whole write: go one by one
        for c in available:
            try:
                _write(f"{root}/cgroup.subtree_control", f"+{c}")
            except OSError as exc:
                log(f"cgroup controller {c}: {exc}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def boot(modules: Sequence[str]) -> None:
    os.environ.setdefault("PATH", _PATH)
    image = root_is_image()
    if not image:  # the DAX image is a mount already
        apply_movable_root()
    apply_mounts(BOOT_MOUNTS[:3])  # /dev first, so the console exists
    ensure_stdio()
    apply_mounts(BOOT_MOUNTS[3:])
    if image:
        apply_writable_etc()
    started = time.monotonic()
    load_modules([m for m in modules if module_name(m) in CORE_MODULES])
    with open("/proc/cmdline") as f:
        devices = read_virtio_devices() | hotplug_devices(f.read())
    rest = plan_boot_modules(modules, devices)
    load_modules(rest)
    log(f"modules for virtio devices {sorted(devices)}: {len(rest)} loaded "
        f"in {1e3 * (time.monotonic() - started):.0f} ms")
    enable_cgroup_controllers()


def power_off() -> None:
    """Never returns: poweroff, else busybox poweroff -f, else exit (the kernel panics)."""
    try:
        linux.power_off()
    except OSError as exc:
        write_console(f"pykata-agent: reboot(POWER_OFF) failed: {exc}\n")
    try:
        os.execv("/bin/busybox", ["poweroff", "-f"])
    except OSError as exc:
        write_console(f"pykata-agent: busybox poweroff failed: {exc}\n")
    os._exit(1)
