"""`pykata run` against real QEMU VMs (TCG here): output, exit codes, stdio, spec, leaks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import Pykata, leftovers

from pykata.domain.spec import default_spec

pytestmark = pytest.mark.e2e


def test_output_and_exit_code(pykata: Pykata) -> None:
    r = pykata.run("run", "--", "sh", "-c", "echo hello from $(uname -r); exit 3")
    assert r.returncode == 3, r.stderr.decode()
    assert r.stdout.decode().startswith("hello from 6.1.")
    assert r.stderr == b""


def test_stdin_reaches_the_container(pykata: Pykata) -> None:
    r = pykata.run("run", "-i", "--", "cat", stdin=b"data\nmore data\n")
    assert (r.returncode, r.stdout) == (0, b"data\nmore data\n"), r.stderr.decode()


def test_no_stdin_means_eof(pykata: Pykata) -> None:
    r = pykata.run("run", "--", "sh", "-c", "cat; echo done")
    assert (r.returncode, r.stdout) == (0, b"done\n"), r.stderr.decode()


def test_stdout_and_stderr_stay_separate(pykata: Pykata) -> None:
    r = pykata.run("run", "--", "sh", "-c", "echo out; echo err >&2; echo out2")
    assert r.stdout == b"out\nout2\n"
    assert r.stderr == b"err\n"


def test_killed_by_signal_reports_128_plus_n(pykata: Pykata, tmp_path: Path) -> None:
    # Without a PID namespace: PID 1 of a namespace ignores even SIGKILL from inside it.
    spec = default_spec(["sh", "-c", "kill -9 $$"])
    spec["root"]["path"] = str(pykata.image_dir / "rootfs" / "busybox")
    spec["linux"]["namespaces"] = [{"type": "mount"}, {"type": "uts"}]
    (tmp_path / "config.json").write_text(json.dumps(spec))
    r = pykata.run("run", "--bundle", str(tmp_path))
    assert r.returncode == 128 + 9, r.stderr.decode()


def test_bundle_env_cwd_user(pykata: Pykata, tmp_path: Path) -> None:
    spec = default_spec(["sh", "-c", 'echo "$FOO"; pwd; id -u; id -g'])
    spec["root"]["path"] = str(pykata.image_dir / "rootfs" / "busybox")
    spec["process"]["env"].append("FOO=bar baz")
    spec["process"]["cwd"] = "/tmp"
    spec["process"]["user"] = {"uid": 65534, "gid": 65534}
    (tmp_path / "config.json").write_text(json.dumps(spec))
    r = pykata.run("run", "--bundle", str(tmp_path))
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split("\n") == ["bar baz", "/tmp", "65534", "65534", ""]


def test_rootfs_is_shared_read_write(pykata: Pykata, busybox_rootfs: Path) -> None:
    r = pykata.run("run", "--rootfs", str(busybox_rootfs), "--",
                   "sh", "-c", "echo written > /hello.txt")
    assert r.returncode == 0, r.stderr.decode()
    assert (busybox_rootfs / "hello.txt").read_text() == "written\n"


def test_demo_rootfs_is_read_only(pykata: Pykata) -> None:
    r = pykata.run("run", "--", "sh", "-c", "touch /x 2>/dev/null && echo wrote || echo ro")
    assert r.stdout == b"ro\n", r.stderr.decode()


def test_4mib_stdout_is_byte_exact(pykata: Pykata, busybox_rootfs: Path) -> None:
    data = os.urandom(4 << 20)
    (busybox_rootfs / "blob").write_bytes(data)
    r = pykata.run("run", "--rootfs", str(busybox_rootfs), "--", "cat", "/blob")
    assert r.returncode == 0, r.stderr.decode()
    assert len(r.stdout) == len(data)
    assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(data).digest()


def test_bad_bundle_is_a_clear_error(pykata: Pykata, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"process": {"args": []}, "root": {"path": "r"}}')
    r = pykata.run("run", "--bundle", str(tmp_path))
    assert r.returncode == 125
    assert b"process.args" in r.stderr


def test_failed_boot_leaves_nothing(pykata: Pykata) -> None:
    state = Path(f"{pykata.state_dir}-bad")
    conf = pykata.config.with_name("bad.toml")
    conf.write_text(f'[runtime]\nstate_dir = "{state}"\n'
                    '[hypervisor.qemu]\nkernel = "/nonexistent"\n')
    r = pykata.run("run", "--", "true", config=conf)
    assert r.returncode == 125
    assert b"/nonexistent" in r.stderr
    assert leftovers(state) == []
    state.rmdir()


def test_too_long_state_dir_is_a_clear_error(pykata: Pykata) -> None:
    conf = pykata.config.with_name("long.toml")
    conf.write_text(f'[runtime]\nstate_dir = "/run/{"x" * 90}"\n')
    r = pykata.run("run", "--", "true", config=conf)
    assert r.returncode == 125
    assert b"runtime.state_dir" in r.stderr and b"Traceback" not in r.stderr


def test_ten_sequential_runs_leave_nothing(pykata: Pykata) -> None:
    for i in range(10):
        r = pykata.run("run", "--", "sh", "-c", f"echo {i}")
        assert (r.returncode, r.stdout) == (0, f"{i}\n".encode()), r.stderr.decode()
    assert leftovers(pykata.state_dir) == []


def test_ctrl_c_tears_everything_down(pykata: Pykata) -> None:
    """Ctrl-C reaches the container (as with docker run), whose exit is pykata's."""
    env = {**os.environ, "PYKATA_CONF_FILE": str(pykata.config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pykata.cli.main", "run", "--", "sh", "-c",
         'trap "exit 130" INT; echo ready; while :; do sleep 0.1; done'],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert leftovers(pykata.state_dir) == []


def _netadmin_bundle(pykata: Pykata, tmp_path: Path, script: str,
                     sysctl: dict[str, str]) -> Path:
    spec = default_spec(["sh", "-c", script])
    spec["root"]["path"] = str(pykata.image_dir / "rootfs" / "busybox")
    caps = spec["process"].setdefault("capabilities", {})
    for kind in ("bounding", "effective", "permitted"):
        caps[kind] = sorted({*caps.get(kind, []), "CAP_NET_ADMIN"})
    # No network namespace of its own: the container shares the VM's, as a pod's do.
    spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"]
                                   if ns["type"] != "network"]
    spec["linux"]["sysctl"] = sysctl
    (tmp_path / "config.json").write_text(json.dumps(spec))
    return tmp_path


def test_modules_load_on_demand_and_sysctls_apply(pykata: Pykata, tmp_path: Path) -> None:
    """The guest kernel's request_module finds bridge, veth, 8021q and vxlan (and their
    dependencies) through modprobe; a net.* sysctl lands in the VM's namespace (the agent's
    doing) and an IPC one in the container's (the runtime's)."""
    script = ("ip link add br0 type bridge && ip link add v0 type veth peer name v1 && "
              "ip link add link v0 name v0.5 type vlan id 5 && "
              "ip link add vx0 type vxlan id 42 dstport 4789 dev v0 && "
              "cat /proc/sys/net/ipv4/ip_local_port_range /proc/sys/kernel/shm_rmid_forced && "
              "cut -d' ' -f1 /proc/modules")
    bundle = _netadmin_bundle(pykata, tmp_path, script, {
        "net.ipv4.ip_local_port_range": "20000 30000", "kernel.shm_rmid_forced": "1"})
    r = pykata.run("run", "--bundle", str(bundle))
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().split()
    assert lines[:3] == ["20000", "30000", "1"]
    assert {"bridge", "stp", "llc", "veth", "8021q", "vxlan"} <= set(lines[3:])


def test_a_sysctl_the_guest_lacks_is_named(pykata: Pykata, tmp_path: Path) -> None:
    bundle = _netadmin_bundle(pykata, tmp_path, "true", {"net.ipv4.no_such_sysctl": "1"})
    r = pykata.run("run", "--bundle", str(bundle))
    assert r.returncode == 125
    assert "'net.ipv4.no_such_sysctl': the guest kernel has no such sysctl" in r.stderr.decode()
