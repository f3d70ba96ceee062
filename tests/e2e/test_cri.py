"""Kubernetes-path behaviour through containerd's CRI, for runtime handlers runc (the
reference) and pykata (every pod a VM).

One private CRI containerd per module (see cri_support). Each test runs its pods itself and
removes them; afterwards nothing may be left: no pod or container, no shim, QEMU or
virtiofsd, no mount, pod cgroup or pod network namespace.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import containerd_support
import grpc
import pytest
from cri_api import api_pb2 as cri
from cri_support import (
    CriError,
    CriHarness,
    Pod,
    module_harness,
    pykata_missing_reason,
)

pytestmark = pytest.mark.e2e

HANDLERS = ["runc", "pykata"]
SHM_KEY = 0x70796B61         # the SysV segment's key ("pyka")
PORT = 8080
# Listens on 127.0.0.1 only; every connection gets a child that reads a line and answers.
ECHO_SERVER = ["nc", "-ll", "-p", str(PORT), "127.0.0.1", "-e",
               "sh", "-c", 'read line; echo "got $line"']
SYSCTLS = {"net.ipv4.ip_local_port_range": "20000 30000", "kernel.shm_rmid_forced": "1"}


@pytest.fixture(scope="module")
def harness() -> Iterator[CriHarness]:
    yield from module_harness("the CRI tests")


@pytest.fixture(params=HANDLERS)
def handler(request: pytest.FixtureRequest, harness: CriHarness) -> str:
    name: str = request.param
    if name == "pykata":
        reason = pykata_missing_reason()
        if reason:
            pytest.skip(reason)
    return name


@pytest.fixture(autouse=True)
def nothing_left(harness: CriHarness) -> Iterator[None]:
    yield
    left = harness.wait_clean()
    if left:
        log = harness.ctrd.log_tail(60)
        harness.remove_all()
        harness.wait_clean()
        pytest.fail(f"left behind: {left}\ncontainerd log:\n{log}")


def check(harness: CriHarness, cid: str, *cmd: str) -> str:
    """ExecSync cmd in the container; its stdout, asserting it succeeded."""
    r = harness.exec(cid, *cmd)
    assert r.exit_code == 0, f"{cmd} in {cid}: exit {r.exit_code}: {r.stderr.decode()}"
    return r.stdout.decode()


def sleeper(harness: CriHarness, pod: Pod, name: str, seconds: int = 100000) -> str:
    """A container whose process has no SIGTERM handler and is not its PID namespace's 1."""
    return harness.start_container(pod, name, ["sleep", str(seconds)])


def test_handler_runs_the_pod(harness: CriHarness, handler: str) -> None:
    """The handler is really in effect: runc shares the host's kernel, pykata boots a VM."""
    host_boot_id = Path("/proc/sys/kernel/random/boot_id").read_text()
    with harness.pod("which-runtime", handler=handler) as pod:
        cid = sleeper(harness, pod, "a")
        boot_id = check(harness, cid, "cat", "/proc/sys/kernel/random/boot_id")
        qemu = [line for line in containerd_support.leftovers(harness.state_dir)
                if "qemu-system" in line]
        if handler == "runc":
            assert (boot_id, qemu) == (host_boot_id, [])
        else:
            assert boot_id != host_boot_id and len(qemu) == 1, qemu


# --- a: POD namespaces for IPC and PID; a fast StopContainer ------------------------------


def test_pod_shares_ipc_and_pid_and_stops_fast(harness: CriHarness, handler: str) -> None:
    with harness.pod("shared-ns", handler=handler) as pod:
        a = sleeper(harness, pod, "a", 100001)
        b = sleeper(harness, pod, "b", 100002)

        assert check(harness, a, "readlink", "/proc/self/ns/ipc") == \
            check(harness, b, "readlink", "/proc/self/ns/ipc")
        if harness.has_shmmk:  # a SysV segment made in a, seen from b
            check(harness, a, "shmmk", hex(SHM_KEY), "4096")
            keys = [line.split()[0] for line in
                    check(harness, b, "cat", "/proc/sysvipc/shm").splitlines()[1:]]
            assert str(SHM_KEY) in keys, f"segment {SHM_KEY} not seen from b: {keys}"

        assert "sleep 100002" in check(harness, a, "ps", "-o", "pid,args")
        assert "sleep 100001" in check(harness, b, "ps", "-o", "pid,args")
        for cid in (a, b):
            init = check(harness, cid, "cat", "/proc/1/cmdline").split("\0")
            assert init[0] in ("/pause", "/bin/sh"), f"PID 1 in {cid} is {init}"

        started = time.monotonic()
        harness.client.stop_container(a, timeout=30)
        took = time.monotonic() - started
        assert took < 10, f"StopContainer(timeout=30) took {took:.1f}s: SIGTERM was ignored"
        assert harness.client.container_status(a).state == cri.CONTAINER_EXITED
        assert harness.client.container_status(b).state == cri.CONTAINER_RUNNING


# --- b: pod sysctls ------------------------------------------------------------------------


def test_pod_sysctls_reach_every_container(harness: CriHarness, handler: str) -> None:
    with harness.pod("sysctls", handler=handler, sysctls=SYSCTLS) as pod:
        for name in ("a", "b"):
            cid = sleeper(harness, pod, name)
            for key, value in SYSCTLS.items():
                path = "/proc/sys/" + key.replace(".", "/")
                assert check(harness, cid, "cat", path).split() == value.split(), (name, key)


# --- c: kernel modules (a bridge) ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["privileged", "cap_net_admin", "no_cap"])
def test_bridge_link(harness: CriHarness, handler: str, mode: str) -> None:
    privileged = mode == "privileged"
    caps = ["NET_ADMIN"] if mode == "cap_net_admin" else []
    with harness.pod(f"bridge-{mode.replace('_', '-')}", handler=handler,
                     privileged=privileged) as pod:
        cid = harness.start_container(pod, "net", ["sleep", "100000"], privileged=privileged,
                                      add_capabilities=caps)
        r = harness.exec(cid, "ip", "link", "add", "br0", "type", "bridge")
        if mode == "no_cap":  # the control: without CAP_NET_ADMIN it must be refused
            assert r.exit_code != 0 and b"not permitted" in r.stderr, r
            return
        assert r.exit_code == 0, f"ip link add br0 type bridge: {r.stderr.decode()}"
        assert "br0" in check(harness, cid, "ip", "-o", "link", "show", "br0")


# --- d: port-forward to a port on the pod's localhost -------------------------------------


def test_port_forward_to_localhost(harness: CriHarness, handler: str) -> None:
    with harness.pod("port-forward", handler=handler) as pod:
        cid = harness.start_container(pod, "srv", ECHO_SERVER)
        deadline = time.monotonic() + 20
        while f"127.0.0.1:{PORT} " not in check(harness, cid, "netstat", "-ltn"):
            assert time.monotonic() < deadline, f"nothing listens on {PORT}"
            time.sleep(0.2)
        with harness.port_forward(pod.id, PORT) as a, harness.port_forward(pod.id, PORT) as b:
            b.send(b"bee\n")
            assert b.read_all() == b"got bee\n", f"stream b: {b.error}"
            a.send(b"aye\n")
            assert a.read_all() == b"got aye\n", f"stream a: {a.error}"
        with harness.port_forward(pod.id, PORT) as again:  # still serving after both ended
            again.send(b"again\n")
            assert again.read_all() == b"got again\n", again.error
    assert harness.wait_clean() == []


# --- e: host namespaces cannot be given to a VM -------------------------------------------


@pytest.mark.parametrize("option", ["network", "pid", "ipc"])
def test_host_namespace_is_refused(harness: CriHarness, handler: str, option: str) -> None:
    if handler == "runc":
        pytest.skip("with runc the pod would really share the host's namespaces")
    namespaces = cri.NamespaceOption(network=cri.POD, pid=cri.POD, ipc=cri.POD)
    setattr(namespaces, option, cri.NODE)
    with pytest.raises(CriError) as refused:
        pod = harness.run_pod(f"host-{option}", handler=handler, namespaces=namespaces)
        harness.remove_pod(pod.id)
    err = refused.value
    assert err.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION), \
        str(err)
    assert option in err.details.lower() and "host" in err.details.lower(), err.details
    assert harness.client.list_pod_sandbox() == []
