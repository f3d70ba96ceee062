"""The agent's service layer on this host, through its ttrpc handler table (bytes in, bytes
out), with a real OCI runtime and a busybox rootfs; no PID-1 duties, no VM.

The test process becomes a child subreaper while a scenario runs, so container processes
re-parent to it and the agent's reaper collects them, as PID 1 does in the guest.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from pykata.agent import linux
from pykata.agent.config import AgentConfig
from pykata.agent.handlers import AGENT_SERVICE, HEALTH_SERVICE
from pykata.agent.server import Agent, build_agent
from pykata.agent.storage import MountPlan
from pykata.domain import errors
from pykata.domain.errors import RpcError
from pykata.protocol.pb import agent_pb2 as pb

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "cat", "echo", "sleep", "true")


def make_rootfs(path: Path) -> Path:
    (path / "bin").mkdir(parents=True)
    for d in ("proc", "dev", "sys", "tmp"):
        (path / d).mkdir()
    shutil.copy(BUSYBOX, path / "bin" / "busybox")
    for applet in APPLETS:
        (path / "bin" / applet).symlink_to("busybox")
    return path


def container_spec(rootfs: str, *args: str) -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": list(args),
                    "env": ["PATH=/bin"], "cwd": "/"},
        "root": {"path": rootfs, "readonly": True},
        "hostname": "c",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")],
                  # A leaf of its own under the test's cgroup: tests reuse container ids,
                  # and this host's cgroup v1 memory controller removes a cgroup
                  # asynchronously, so a same-named one can fail with ENODEV.
                  "cgroupsPath": f"pykata-test-{uuid.uuid4().hex[:16]}"},
    }


def _runtime_works(binary: str, workdir: Path) -> str:
    """'' if `binary` runs a container here, else why not."""
    bundle = workdir / binary.replace("/", "_")
    make_rootfs(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(container_spec("rootfs", "true")))
    try:
        res = subprocess.run([binary, "--root", str(workdir / "root"), "run", "--bundle",
                              str(bundle), f"probe-{os.getpid()}"],
                             capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{binary}: {exc}"
    return "" if res.returncode == 0 else f"{binary}: {res.stderr.strip()[-200:]}"


@functools.cache
def find_runtime() -> tuple[str | None, str]:
    """The first of crun, runc that can run a container here (crun refuses hybrid cgroup
    hosts, where runc works); or None and every reason. Probed once per test session."""
    if os.geteuid() != 0:
        return None, "running containers needs root"
    reasons = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in ("crun", "runc"):
            binary = shutil.which(name)
            if binary is None:
                reasons.append(f"{name}: not installed")
                continue
            why = _runtime_works(binary, Path(workdir))
            if not why:
                return binary, ""
            reasons.append(why)
    return None, "; ".join(reasons)


def require_runtime() -> str:
    binary, why = find_runtime()
    if binary is None:
        pytest.skip(f"no OCI runtime can run containers here: {why}")
    return binary


@pytest.fixture
def runtime() -> str:
    return require_runtime()


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_rootfs(tmp_path_factory.mktemp("img") / "rootfs"))


class RecordingSystem:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def mount(self, plan: MountPlan) -> None:
        self.calls.append(("mount", plan))

    def unmount(self, target: str) -> None:
        self.calls.append(("unmount", target))

    def set_hostname(self, name: str) -> None:
        self.calls.append(("hostname", name))


class Client:
    """Calls the handler table the way the ttrpc server does."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def __call__(self, method: str, request: Message) -> Any:
        service = HEALTH_SERVICE if method in ("Check", "Version") else AGENT_SERVICE
        desc = pb.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[1]]
        out = await self.agent.services[service][method](request.SerializeToString())
        return getattr(pb, desc.methods_by_name[method].output_type.name).FromString(out)

    async def run(self, cid: str, spec: dict[str, Any]) -> None:
        await self("CreateContainer", pb.CreateContainerRequest(
            container_id=cid, oci_spec_json=json.dumps(spec).encode()))
        await self("StartContainer", pb.StartContainerRequest(container_id=cid))

    async def read_all(self, cid: str, exec_id: str = "", stream: str = "ReadStdout") -> bytes:
        chunks = []
        while chunk := (await self(stream, pb.ReadStreamRequest(
                container_id=cid, exec_id=exec_id, len=4096))).data:
            chunks.append(chunk)
        return b"".join(chunks)


Scenario = Callable[[Client], Awaitable[None]]


def run_agent(tmp: Path, runtime: str, scenario: Scenario,
              system: RecordingSystem | None = None) -> None:
    config = AgentConfig(oci_runtime=runtime, runtime_root=str(tmp / "rt"),
                         state_dir=str(tmp / "state"), shared_root=str(tmp / "shared"))

    async def main() -> None:
        linux.set_child_subreaper(True)
        agent = build_agent(config, system or RecordingSystem())
        try:
            await asyncio.wait_for(scenario(Client(agent)), 20)
        finally:
            await agent.shutdown()
            linux.set_child_subreaper(False)

    asyncio.run(main())
    # Shutdown removed every container: the runtime keeps no state for any.
    assert not (tmp / "rt").exists() or os.listdir(tmp / "rt") == []


@pytest.fixture
def agent_run(tmp_path: Path, runtime: str) -> Iterator[Callable[[Scenario], None]]:
    yield lambda scenario: run_agent(tmp_path, runtime, scenario)


async def failure(call: Awaitable[Any]) -> tuple[str, str]:
    """(code name, message) of the RpcError the call raises."""
    try:
        await call
    except RpcError as exc:
        return errors.code_name(exc.code), exc.message
    raise AssertionError("the call succeeded")


# ---- lifecycle -----------------------------------------------------------------------


def test_run_container_stdio_and_exit_code(agent_run: Callable[[Scenario], None],
                                           rootfs: str) -> None:
    async def scenario(call: Client) -> None:
        await call.run("c1", container_spec(rootfs, "sh", "-c",
                                            "echo out; echo err >&2; cat; exit 3"))
        waiter = asyncio.ensure_future(call("WaitProcess", pb.WaitProcessRequest(
            container_id="c1")))
        first = await call("ReadStdout", pb.ReadStreamRequest(container_id="c1", len=2))
        assert first.data == b"ou"  # at most len bytes
        assert (await call("ReadStderr", pb.ReadStreamRequest(
            container_id="c1", len=100))).data == b"err\n"
        written = await call("WriteStdin", pb.WriteStreamRequest(container_id="c1",
                                                                 data=b"hello"))
        assert written.len == 5
        await call("CloseStdin", pb.CloseStdinRequest(container_id="c1"))
        assert await call.read_all("c1") == b"t\nhello"
        assert (await waiter).status == 3
        assert (await call("WaitProcess", pb.WaitProcessRequest(container_id="c1"))).status == 3
        assert await call.read_all("c1", stream="ReadStderr") == b""
        await call("RemoveContainer", pb.RemoveContainerRequest(container_id="c1"))
        code, msg = await failure(call("WaitProcess", pb.WaitProcessRequest(container_id="c1")))
        assert (code, "'c1'" in msg) == ("NOT_FOUND", True)

    agent_run(scenario)


def test_signal_kills_with_128_plus_signal_while_a_read_long_polls(
        agent_run: Callable[[Scenario], None], rootfs: str) -> None:
    async def scenario(call: Client) -> None:
        await call.run("c2", container_spec(rootfs, "sleep", "100"))
        read = asyncio.ensure_future(call("ReadStdout", pb.ReadStreamRequest(
            container_id="c2", len=10)))
        wait = asyncio.ensure_future(call("WaitProcess", pb.WaitProcessRequest(
            container_id="c2")))
        await asyncio.sleep(0.05)
        assert not read.done() and not wait.done()
        # The parked read and wait hold up nothing.
        health = await call("Check", pb.CheckRequest())
        assert health.status == pb.HealthCheckResponse.SERVING
        await call("SignalProcess", pb.SignalProcessRequest(container_id="c2", signal=9))
        assert (await wait).status == 128 + 9
        assert (await read).data == b""
        code, msg = await failure(call("SignalProcess", pb.SignalProcessRequest(
            container_id="c2", signal=15)))
        assert code == "FAILED_PRECONDITION" and "stopped" in msg, msg

    agent_run(scenario)


def test_exec_a_second_process(agent_run: Callable[[Scenario], None], rootfs: str,
                               tmp_path: Path) -> None:
    exec_process = {"args": ["sh", "-c", "read x; echo got-$x; exit 7"], "cwd": "/",
                    "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}

    async def scenario(call: Client) -> None:
        await call.run("c3", container_spec(rootfs, "sleep", "100"))
        req = pb.ExecProcessRequest(container_id="c3", exec_id="e1",
                                    process_json=json.dumps(exec_process).encode())
        await call("ExecProcess", req)
        code, msg = await failure(call("ExecProcess", req))
        assert code == "ALREADY_EXISTS" and "'e1'" in msg, msg
        await call("WriteStdin", pb.WriteStreamRequest(container_id="c3", exec_id="e1",
                                                       data=b"it\n"))
        assert await call.read_all("c3", "e1") == b"got-it\n"
        done = await call("WaitProcess", pb.WaitProcessRequest(container_id="c3", exec_id="e1"))
        assert done.status == 7
        # A finished exec is forgotten on request: its stdio and files go, its id is free.
        bundle = tmp_path / "state" / "containers" / "c3"
        fds = len(os.listdir("/proc/self/fd"))
        await call("RemoveProcess", pb.RemoveProcessRequest(container_id="c3", exec_id="e1"))
        assert len(os.listdir("/proc/self/fd")) < fds
        assert not [p for p in os.listdir(bundle) if p.startswith("exec-e1")]
        code, msg = await failure(call("RemoveProcess", pb.RemoveProcessRequest(
            container_id="c3", exec_id="e1")))
        assert code == "NOT_FOUND" and "'e1'" in msg, msg
        await call("ExecProcess", req)  # the id can be used again
        code, msg = await failure(call("RemoveProcess", pb.RemoveProcessRequest(
            container_id="c3", exec_id="e1")))
        assert code == "FAILED_PRECONDITION" and "running" in msg, msg
        init = asyncio.ensure_future(call("WaitProcess", pb.WaitProcessRequest(
            container_id="c3")))
        await call("RemoveContainer", pb.RemoveContainerRequest(container_id="c3"))
        assert (await init).status == 128 + 9  # delete --force kills the init

    agent_run(scenario)


def test_relative_root_path_is_under_the_shared_root(tmp_path: Path, runtime: str) -> None:
    make_rootfs(tmp_path / "shared" / "c4" / "rootfs")

    async def scenario(call: Client) -> None:
        await call.run("c4", container_spec("rootfs", "echo", "shared"))
        assert await call.read_all("c4") == b"shared\n"
        config = json.loads((tmp_path / "state" / "containers" / "c4" / "config.json").read_text())
        assert config["root"]["path"] == str(tmp_path / "shared" / "c4" / "rootfs")
        assert (await call("WaitProcess", pb.WaitProcessRequest(container_id="c4"))).status == 0
        await call("RemoveContainer", pb.RemoveContainerRequest(container_id="c4"))
        assert not (tmp_path / "state" / "containers" / "c4").exists()

    run_agent(tmp_path, runtime, scenario)


def test_remove_with_timeout_lets_the_container_finish(
        agent_run: Callable[[Scenario], None], rootfs: str) -> None:
    async def scenario(call: Client) -> None:
        await call.run("c5", container_spec(rootfs, "sh", "-c", "sleep 0.2; exit 4"))
        await call("RemoveContainer", pb.RemoveContainerRequest(container_id="c5", timeout=10))
        code, _ = await failure(call("StartContainer", pb.StartContainerRequest(
            container_id="c5")))
        assert code == "NOT_FOUND"

    agent_run(scenario)


# ---- sandbox, details ----------------------------------------------------------------


def test_sandbox_mounts_storages_sets_hostname_and_undoes_them(tmp_path: Path,
                                                               runtime: str) -> None:
    system = RecordingSystem()
    storage = pb.Storage(driver="virtiofs", source="pykatafs", options=["ro", "dax"],
                         mount_point="/run/pykata/shared")

    async def scenario(call: Client) -> None:
        await call("CreateSandbox", pb.CreateSandboxRequest(
            hostname="pod1", sandbox_id="sb", storages=[storage]))
        code, _ = await failure(call("CreateSandbox", pb.CreateSandboxRequest(sandbox_id="sb")))
        assert code == "ALREADY_EXISTS"
        await call("DestroySandbox", pb.DestroySandboxRequest())

    run_agent(tmp_path, runtime, scenario, system)
    assert system.calls == [
        ("hostname", "pod1"),
        ("mount", MountPlan("pykatafs", "/run/pykata/shared", "virtiofs", linux.MS_RDONLY, "dax")),
        ("unmount", "/run/pykata/shared"),
    ]


def test_destroy_sandbox_removes_every_container(agent_run: Callable[[Scenario], None],
                                                 rootfs: str) -> None:
    async def scenario(call: Client) -> None:
        await call.run("d1", container_spec(rootfs, "sleep", "100"))
        await call("CreateContainer", pb.CreateContainerRequest(
            container_id="d2", oci_spec_json=json.dumps(container_spec(rootfs, "true")).encode()))
        wait = asyncio.ensure_future(call("WaitProcess", pb.WaitProcessRequest(
            container_id="d1")))
        await call("DestroySandbox", pb.DestroySandboxRequest())
        assert (await wait).status == 137
        assert call.agent.containers.registry.all() == []

    agent_run(scenario)


def test_guest_details_and_version(agent_run: Callable[[Scenario], None]) -> None:
    async def scenario(call: Client) -> None:
        d = await call("GetGuestDetails", pb.GuestDetailsRequest(mem_block_size=True))
        assert d.kernel_release == os.uname().release
        assert d.online_cpus >= 1 and d.mem_total_bytes > 1 << 20
        assert d.agent_details.version and not d.agent_details.init_daemon
        v = await call("Version", pb.CheckRequest())
        assert v.agent_version == d.agent_details.version

    agent_run(scenario)
