"""The shared DAX guest image in real VMs: the guest's root is the read-only image on
virtio-pmem, mounted with DAX, and two VMs share its pages through the host's page cache;
a configured initrd still boots the initramfs layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_support import Pykata, leftovers, qemu_argvs

from pykata.domain.spec import default_spec

pytestmark = pytest.mark.e2e

# Run in the VM's PID namespace (no namespace of its own): /proc/1 is the agent, whose
# mounts are the guest's.
GUEST_ROOT = ("grep ' / ' /proc/1/mounts; cat /sys/block/pmem0/queue/dax; "
              "grep ' /etc ' /proc/1/mounts")


def _bundle(pykata: Pykata, tmp_path: Path, script: str) -> Path:
    spec = default_spec(["sh", "-c", script])
    spec["root"]["path"] = str(pykata.image_dir / "rootfs" / "busybox")
    spec["linux"]["namespaces"] = [{"type": "mount"}, {"type": "uts"}]
    (tmp_path / "config.json").write_text(json.dumps(spec))
    return tmp_path


def test_the_guest_root_is_the_read_only_dax_image(pykata: Pykata, tmp_path: Path) -> None:
    r = pykata.run("run", "--bundle", str(_bundle(pykata, tmp_path, GUEST_ROOT)))
    assert r.returncode == 0, r.stderr.decode()
    root, dax, etc = r.stdout.decode().splitlines()
    device, mountpoint, fstype, options = root.split()[:4]
    assert (device, mountpoint, fstype) == ("/dev/pmem0", "/", "ext4"), root
    assert {"ro", "dax=always"} <= set(options.split(",")), root
    assert dax == "1"
    # /etc is a tmpfs over the read-only image (the agent writes hosts and resolv.conf)
    assert etc.split()[1:3] == ["/etc", "tmpfs"], etc
    assert leftovers(pykata.state_dir) == []


def _image_kib(pid: int) -> tuple[int, int]:
    """(Rss, Shared_Clean) of the DAX image's mapping in QEMU `pid`, in KiB."""
    rss = shared = 0
    in_image = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if head and not head[0].endswith(":"):
                in_image = head[-1].endswith("/rootfs.img")
            elif in_image and head[0] == "Rss:":
                rss += int(head[1])
            elif in_image and head[0] == "Shared_Clean:":
                shared += int(head[1])
    return rss, shared


def test_two_vms_share_the_image_pages(pykata: Pykata) -> None:
    env = {**os.environ, "PYKATA_CONF_FILE": str(pykata.config)}
    runs = [subprocess.Popen([sys.executable, "-m", "pykata.cli.main", "run", "--", "sh", "-c",
                              "echo up; exec sleep 300"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for _ in range(2)]
    try:
        for run in runs:
            assert run.stdout is not None and run.stdout.readline() == b"up\n"
        deadline = time.monotonic() + 30
        while len(qemus := qemu_argvs(pykata.state_dir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(qemus) == 2, qemus
        for argv in qemus.values():
            assert any("virtio-pmem-pci" in a for a in argv)
        for pid in qemus:
            rss, shared = _image_kib(pid)
            # the agent's Python, crun and the libraries were read through the mapping,
            # and those pages are the same page cache pages in both QEMUs
            assert rss > 8 * 1024, (pid, rss)
            assert shared > 8 * 1024, (pid, rss, shared)
    finally:
        for run in runs:
            run.terminate()
        for run in runs:
            run.communicate(timeout=60)
    assert leftovers(pykata.state_dir) == []


def test_a_configured_initrd_boots_the_initramfs_layout(pykata: Pykata, tmp_path: Path) -> None:
    config = tmp_path / "initrd.toml"
    config.write_text(pykata.config.read_text() + "[factory]\nenable_template = false\n"
                      f'[hypervisor.qemu]\ninitrd = "{pykata.image_dir}/image/initramfs.img"\n')
    r = pykata.run("run", "--bundle", str(_bundle(pykata, tmp_path, "grep ' / ' /proc/1/mounts")),
                   config=config)
    assert r.returncode == 0, r.stderr.decode()
    assert "pmem" not in r.stdout.decode()
    plan = pykata.run("plan", "--bundle", str(tmp_path), "--json", config=config)
    assert plan.returncode == 0, plan.stderr.decode()
    assert "virtio-pmem" not in plan.stdout.decode()
    assert leftovers(pykata.state_dir) == []
