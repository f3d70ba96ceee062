"""The CRI harness, proved with runc: containerd's CRI in a network namespace of its own,
a pod with a busybox container, ExecSync, port-forward through the streaming server, and
nothing left afterwards (no pod, container, process, mount, cgroup or network namespace).

The pykata scenarios (test_cri.py) use the same harness with runtime handler `pykata`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cri_api import api_pb2 as cri
from cri_support import TOOLS_REF, CriHarness, PortForwardStream, missing_reason, module_harness
from oci_image import PAUSE_REF

pytestmark = pytest.mark.e2e

PORT = 8080
# Listens on 127.0.0.1 only; every connection gets a child that reads a line and answers.
ECHO_SERVER = ["nc", "-ll", "-p", str(PORT), "127.0.0.1", "-e",
               "sh", "-c", 'read line; echo "got $line"']


@pytest.fixture(scope="module")
def harness() -> Iterator[CriHarness]:
    yield from module_harness("the CRI harness tests")


@pytest.fixture(autouse=True)
def nothing_left(harness: CriHarness) -> Iterator[None]:
    yield
    left = harness.wait_clean()
    if left:
        log = harness.ctrd.log_tail(60)
        harness.remove_all()
        pytest.fail(f"left behind: {left}\ncontainerd log:\n{log}")


def wait_listening(harness: CriHarness, cid: str, port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while f"127.0.0.1:{port} " not in harness.exec(cid, "netstat", "-ltn").stdout.decode():
        assert time.monotonic() < deadline, f"nothing listens on {port} in {cid}"
        time.sleep(0.2)


def test_version_answers(harness: CriHarness) -> None:
    v = harness.client.version()
    assert (v.runtime_name, v.runtime_api_version) == ("containerd", "v1")


def test_images_are_there(harness: CriHarness) -> None:
    for ref in (TOOLS_REF, PAUSE_REF):
        image = harness.client.image_status(ref)
        assert image is not None and ref in image.repo_tags


def test_pod_exec_port_forward_and_removal(harness: CriHarness) -> None:
    pod = harness.run_pod("harness")
    try:
        response = harness.client.pod_sandbox_status(pod.id, verbose=True)
        status = response.status
        assert status.state == cri.SANDBOX_READY and status.network.ip.startswith("10.88.")
        # The pod's network namespace is a mount under the harness's dir, not /var/run/netns.
        spec = json.loads(response.info["info"])["runtimeSpec"]
        [netns] = [n["path"] for n in spec["linux"]["namespaces"] if n["type"] == "network"]
        assert Path(netns).parent == harness.ctrd.pod_netns_dir
        cid = harness.start_container(pod, "srv", ECHO_SERVER)
        assert harness.client.container_status(cid).state == cri.CONTAINER_RUNNING
        r = harness.exec(cid, "echo", "hi")
        assert (r.exit_code, r.stdout, r.stderr) == (0, b"hi\n", b"")
        assert harness.exec(cid, "sh", "-c", "exit 3").exit_code == 3

        wait_listening(harness, cid, PORT)
        with harness.port_forward(pod.id, PORT) as a, harness.port_forward(pod.id, PORT) as b:
            b.send(b"bee\n")
            assert b.read_all() == b"got bee\n", b.error
            a.send(b"aye\n")
            assert a.read_all() == b"got aye\n", a.error

        harness.client.stop_container(cid, timeout=10)
        assert harness.client.container_status(cid).state == cri.CONTAINER_EXITED
        harness.client.remove_container(cid)
        assert harness.client.list_containers(pod.id) == []
    finally:
        harness.remove_pod(pod.id)
    assert harness.client.list_pod_sandbox() == []
    assert harness.wait_clean() == []


def test_port_forward_to_a_closed_port_reports_the_error(harness: CriHarness) -> None:
    with harness.pod("closed-port") as pod:
        harness.start_container(pod, "idle", ["sleep", "100000"])
        with harness.port_forward(pod.id, 9) as stream:
            assert stream.read_all() == b""
            assert "failed to connect to localhost:9" in stream.error


def test_stop_removes_a_running_pod_and_leaves_nothing() -> None:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    h = CriHarness().start()
    try:
        pod = h.run_pod("left-running")
        h.start_container(pod, "sleeper", ["sleep", "100000"])
        assert h.leftovers()  # the pod, its container, the shim, a cgroup, its netns
    finally:
        left = h.stop()
    assert left == [f"pod {pod.id} left-running (still there at stop)"]
    assert not h.base.exists() and not h.netns_path.exists()
    assert h.leftovers() == []


def test_stream_parses_channels_and_port_prefix() -> None:
    """The WebSocket framing, without a server: port prefix stripped per channel, error
    channel kept apart, fragmented messages joined."""
    import socket
    import struct

    ours, theirs = socket.socketpair()
    stream = PortForwardStream(ours, PORT)
    port = struct.pack("<H", PORT)

    def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
        return struct.pack("!BB", (0x80 if fin else 0) | opcode, len(payload)) + payload

    theirs.sendall(frame(2, b"\x00" + port) + frame(2, b"\x01" + port)
                   + frame(2, b"\x00he", fin=False) + frame(0, b"llo")
                   + frame(2, b"\x01oops") + frame(8, struct.pack("!H", 1000)))
    assert stream.read_all(timeout=5) == b"hello"
    assert stream.error == "oops"
    stream.close()
    theirs.close()
