"""Pod networking end to end: a container in a pykata VM on a veth of a network namespace
the test makes, reached from the veth's other end and reaching it, with `pykata run` and
with `ctr run --with-ns network:...`; a pod whose namespace has two veths, each reached
from its own peer; two pods at once; nothing left in the namespace after teardown, also
after QEMU is SIGKILLed by pid.

The veth's other end lives in a peer namespace of its own (netns_support), so nothing here
touches the host's own network.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netns_support
import pytest
from containerd_support import IMAGE_REF
from e2e_support import Pykata
from netns_support import PodNet, add_veth, make_pod_net
from test_shim import ShimEnv, env, nothing_left, removed_after, wait_gone

from pykata.domain.spec import default_spec

pytestmark = pytest.mark.e2e
__all__ = ["env", "nothing_left"]  # the containerd fixtures, shared with test_shim

BOOT_TIMEOUT = 120.0
SERVE = "while true; do echo pong-$0 | nc -l -p 7001; done"


@pytest.fixture
def pod_nets() -> Iterator[list[PodNet]]:
    reason = netns_support.missing_reason()
    if reason:
        pytest.skip(reason)
    nets: list[PodNet] = []
    yield nets
    for net in nets:
        net.remove()


def peer_server(net: PodNet, port: int = 7000) -> subprocess.Popen[bytes]:
    """A one-shot server on the peer end: what the pod sends arrives on its stdout."""
    return subprocess.Popen(net.in_peer("busybox", "nc", "-l", "-p", str(port)),
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)


def fetch_from_pod(net: PodNet, timeout: float = BOOT_TIMEOUT, port: int = 7001) -> bytes:
    """Connect from the peer end to the pod's port until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(net.in_peer("busybox", "nc", "-w", "2", net.pod_ip, str(port)),
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
        if r.stdout:
            return r.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing from {net.pod_ip}:{port} in {timeout:g} s")
        time.sleep(0.5)


def stop(proc: subprocess.Popen[bytes]) -> bytes:
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=10)
    return out or b""


def assert_clean(net: PodNet) -> None:
    state = net.pod_state()
    assert "tap" not in state and "ingress" not in state and "mirred" not in state, state
    assert "eth0" in state, "the veth is the test's: it stays"


def bundle(tmp_path: Path, rootfs: Path, net: PodNet, script: str) -> Path:
    spec: dict[str, Any] = default_spec(["sh", "-c", script], root_path=str(rootfs))
    spec["linux"]["namespaces"] = [
        *(ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"),
        {"type": "network", "path": net.pod_path}]
    spec["hostname"] = "netpod"
    (tmp_path / "config.json").write_text(json.dumps(spec))
    return tmp_path


def run_pod(pykata: Pykata, tmp_path: Path, net: PodNet,
            script: str) -> subprocess.Popen[bytes]:
    """`pykata run` of `script` in the busybox rootfs, in `net`'s pod namespace."""
    root = pykata.image_dir / "rootfs" / "busybox"
    env = {**os.environ, "PYKATA_CONF_FILE": str(pykata.config)}
    return subprocess.Popen(
        [sys.executable, "-m", "pykata.cli.main", "run", "--bundle",
         str(bundle(tmp_path, root, net, script))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)


def test_pykata_run_in_a_network_namespace(pykata: Pykata, pod_nets: list[PodNet],
                                           tmp_path: Path) -> None:
    net = make_pod_net()
    pod_nets.append(net)
    server = peer_server(net)
    script = (f"ip addr show eth0; ip -6 route; ip route; echo ping-from-pod | "
              f"nc {net.peer_ip} 7000; echo pong-run | nc -l -p 7001; echo done")
    run = run_pod(pykata, tmp_path, net, script)
    try:
        assert fetch_from_pod(net) == b"pong-run\n"
        out, err = run.communicate(timeout=60)
    finally:
        got = stop(server)
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err.decode()
    text = out.decode()
    assert got == b"ping-from-pod\n"
    assert net.mac in text and f"inet {net.pod_ip}/24" in text, text
    assert f"inet6 {net.pod_ip6}/64" in text, text
    assert f"default via {net.peer_ip} dev eth0" in text, text
    assert text.rstrip().endswith("done")
    assert_clean(net)


def ip_addr_blocks(text: str) -> dict[str, str]:
    """`ip addr` output (up to a "--" line) split into one block per interface, by name."""
    blocks: dict[str, str] = {}
    name = ""
    for line in text.split("\n--\n")[0].splitlines():
        head = line.split(":")
        if len(head) > 2 and head[0].isdigit():
            name = head[1].strip().split("@")[0]
            blocks[name] = ""
        if name:
            blocks[name] += line + "\n"
    return blocks


ROUTED = "10.213.250.1"
# (first veth, second veth): the guest names its NICs eth0, eth1 in the pod's order, so
# "swapped" makes the agent exchange two names.
TWO_VETHS = {"eth0+net1": ("eth0", "net1"), "swapped": ("eth1", "eth0")}


@pytest.mark.parametrize("names", TWO_VETHS.values(), ids=TWO_VETHS.keys())
def test_two_veths(pykata: Pykata, pod_nets: list[PodNet], tmp_path: Path,
                   names: tuple[str, str]) -> None:
    first = make_pod_net(link=names[0])
    pod_nets.append(first)
    # A route through the second veth, to an address only its peer has.
    second = add_veth(first, names[1], mtu=1400, routes=[f"{ROUTED}/32 via {{peer}}"])
    pod_nets.append(second)
    subprocess.run(second.in_peer("ip", "addr", "add", f"{ROUTED}/32", "dev", "lo"),
                   check=True, timeout=30)
    nets = (first, second)
    servers = [peer_server(net) for net in nets] + [peer_server(second, 7002)]
    script = ("ip addr; echo --; ip route; "
              + "".join(f"echo ping-{net.link} | nc {net.peer_ip} 7000; " for net in nets)
              + f"echo ping-routed | nc {ROUTED} 7002; "
              + "".join(f"echo pong-{net.link} | nc -l -p 7001; " for net in nets)
              + "echo done")
    run = run_pod(pykata, tmp_path, first, script)
    try:
        for net in nets:
            assert fetch_from_pod(net) == f"pong-{net.link}\n".encode(), net.link
        out, err = run.communicate(timeout=60)
    finally:
        got = [stop(server) for server in servers]
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err.decode()
    text = out.decode()
    assert got == [*(f"ping-{net.link}\n".encode() for net in nets), b"ping-routed\n"], text
    blocks = ip_addr_blocks(text)
    assert set(blocks) == {"lo", *names}, text
    for net, mtu in zip(nets, (1500, 1400), strict=True):
        block = blocks[net.link]
        assert f"link/ether {net.mac}" in block and f"mtu {mtu}" in block, block
        assert f"inet {net.pod_ip}/24" in block and f"inet6 {net.pod_ip6}/64" in block, block
    assert f"default via {first.peer_ip} dev {first.link}" in text, text
    assert f"10.213.{second.subnet}.0/24 dev {second.link}" in text, text
    assert f"{ROUTED} via {second.peer_ip} dev {second.link}" in text, text
    assert text.rstrip().endswith("done")
    for net in nets:
        assert_clean(net)


def test_missing_namespace_is_named(pykata: Pykata, tmp_path: Path) -> None:
    spec = default_spec(["true"], root_path=str(pykata.image_dir / "rootfs" / "busybox"))
    spec["linux"]["namespaces"].append({"type": "network", "path": "/var/run/netns/pk-none"})
    (tmp_path / "config.json").write_text(json.dumps(spec))
    r = pykata.run("run", "--bundle", str(tmp_path))
    assert r.returncode == 125
    assert "network namespace '/var/run/netns/pk-none': does not exist" in r.stderr.decode()


def ctr_pod(env: ShimEnv, net: PodNet, task_id: str) -> None:
    env.ctr("run", "-d", "--runtime", "io.containerd.pykata.v2", "--with-ns",
            f"network:{net.pod_path}", IMAGE_REF, task_id, "sh", "-c", SERVE, task_id)


def test_ctr_two_pods_and_a_killed_vm(env: ShimEnv, pod_nets: list[PodNet]) -> None:
    nets = [make_pod_net(), make_pod_net()]
    pod_nets.extend(nets)
    with removed_after(env, "net1", "net2"):
        for net, task_id in zip(nets, ("net1", "net2"), strict=True):
            ctr_pod(env, net, task_id)
        for net, task_id in zip(nets, ("net1", "net2"), strict=True):
            assert fetch_from_pod(net) == f"pong-{task_id}\n".encode()
        net = nets[0]
        server = peer_server(net)
        try:
            r = env.ctr("task", "exec", "--exec-id", "e1", "net1", "sh", "-c",
                        f"ip addr show eth0; echo ping-ctr | nc {net.peer_ip} 7000")
        finally:
            got = stop(server)
        assert got == b"ping-ctr\n"
        assert net.mac in r.stdout.decode() and net.pod_ip in r.stdout.decode()
        # Kill pod 2's QEMU by pid: its taps go with it, the shim removes the redirects.
        [task] = [t for t in env.ctrd.tasks() if t.id == "net2"]
        os.kill(task.pid, signal.SIGKILL)
        assert wait_gone(task.pid, 30)
        env.wait_status("net2", "STOPPED", timeout=30)
        assert fetch_from_pod(nets[0]) == b"pong-net1\n", "pod 1 is unaffected"
    for net in nets:
        assert_clean(net)
