"""The host side of the agent protocol against a scripted, misbehaving agent."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from pykata.domain.errors import DEADLINE_EXCEEDED, ProtocolError, RpcError
from pykata.protocol.pb import agent_pb2 as pb
from pykata.sandbox.agent_client import AGENT, AgentClient
from pykata.transport.ttrpc_aio import TtrpcClient, TtrpcServer
from pykata.vmm.processes import log_tail

Handler = Callable[[bytes], Awaitable[bytes]]


def _reply(data: bytes) -> Handler:
    async def handler(_: bytes) -> bytes:
        return data
    return handler


async def _silent(_: bytes) -> bytes:
    await asyncio.sleep(3600)
    return b""


async def _with_agent(methods: Mapping[str, Handler],
                      body: Callable[[AgentClient], Awaitable[None]]) -> None:
    host, guest = socket.socketpair()
    server_streams = await asyncio.open_connection(sock=guest)
    serving = asyncio.ensure_future(TtrpcServer({AGENT: methods}).serve(*server_streams))
    client = AgentClient(TtrpcClient(*await asyncio.open_connection(sock=host)),
                         call_timeout=0.2, create_timeout=0.3)
    try:
        await body(client)
    finally:
        await client.ttrpc.close()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


def _run(methods: Mapping[str, Handler], body: Callable[[AgentClient], Awaitable[None]]) -> None:
    asyncio.run(_with_agent(methods, body))


def test_malformed_reply_is_a_protocol_error() -> None:
    async def body(agent: AgentClient) -> None:
        with pytest.raises(ProtocolError, match="GetGuestDetails: malformed"):
            await agent.guest_details()
    _run({"GetGuestDetails": _reply(b"\xff\xff\xff")}, body)


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("CreateContainer", lambda a: a.create_container(pb.CreateContainerRequest())),
        ("StartContainer", lambda a: a.start_container("c")),
        ("CloseStdin", lambda a: a.close_stdin("c")),
        ("CreateSandbox", lambda a: a.create_sandbox(pb.CreateSandboxRequest())),
    ],
    ids=["create", "start", "close-stdin", "create-sandbox"],
)
def test_silent_agent_times_out(method: str,
                                call: Callable[[AgentClient], Awaitable[object]]) -> None:
    async def body(agent: AgentClient) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RpcError) as err:
            await call(agent)
        assert err.value.code == DEADLINE_EXCEEDED
        assert loop.time() - started < 2
    _run({method: _silent}, body)


@pytest.mark.parametrize("status", [-1, 256, 99999])
def test_exit_status_out_of_range_is_refused(status: int) -> None:
    reply = pb.WaitProcessResponse(status=status).SerializeToString()

    async def body(agent: AgentClient) -> None:
        with pytest.raises(ProtocolError, match=f"exit status {status}"):
            await agent.wait_process("c")
    _run({"WaitProcess": _reply(reply)}, body)


@pytest.mark.parametrize("written", [0, 6])
def test_write_stdin_length_is_checked(written: int) -> None:
    reply = pb.WriteStreamResponse(len=written).SerializeToString()

    async def body(agent: AgentClient) -> None:
        with pytest.raises(ProtocolError, match=f"wrote {written} of 5 bytes"):
            await agent.write_stdin("c", "", b"hello")
    _run({"WriteStdin": _reply(reply)}, body)


def test_read_longer_than_asked_is_refused() -> None:
    reply = pb.ReadStreamResponse(data=b"x" * ((1 << 20) + 1)).SerializeToString()

    async def body(agent: AgentClient) -> None:
        with pytest.raises(ProtocolError, match="ReadStdout"):
            await agent.read_stdout("c")
    _run({"ReadStdout": _reply(reply)}, body)


def _recording(seen: list[bytes], reply: bytes = b"") -> Handler:
    async def handler(data: bytes) -> bytes:
        seen.append(data)
        return reply
    return handler


def test_shim_calls_send_what_they_are_given() -> None:
    seen: list[bytes] = []
    metrics = pb.StatsContainerResponse(metrics=pb.CgroupMetrics(pids=pb.PidsStat(current=2)))
    methods = {m: _recording(seen) for m in ("TtyWinResize", "PauseContainer", "ResumeContainer",
                                              "UpdateContainer", "SignalProcess")}
    methods["ListProcesses"] = _recording(
        seen, pb.ListProcessesResponse(pids=[1, 42]).SerializeToString())
    methods["StatsContainer"] = _recording(seen, metrics.SerializeToString())

    async def body(agent: AgentClient) -> None:
        await agent.tty_win_resize("c", "e", 24, 80)
        await agent.pause_container("c")
        await agent.resume_container("c")
        await agent.update_container("c", b'{"memory": {"limit": 1}}')
        await agent.signal_process("c", "", 15, all=True)
        assert await agent.list_processes("c") == [1, 42]
        assert (await agent.stats_container("c")).metrics.pids.current == 2
    _run(methods, body)
    assert seen == [r.SerializeToString() for r in (
        pb.TtyWinResizeRequest(container_id="c", exec_id="e", row=24, column=80),
        pb.PauseContainerRequest(container_id="c"),
        pb.ResumeContainerRequest(container_id="c"),
        pb.UpdateContainerRequest(container_id="c", resources_json=b'{"memory": {"limit": 1}}'),
        pb.SignalProcessRequest(container_id="c", signal=15, all=True),
        pb.ListProcessesRequest(container_id="c"),
        pb.StatsContainerRequest(container_id="c"),
    )]


@pytest.mark.parametrize("pid", [0, (1 << 22) + 1], ids=["zero", "above-pid-max"])
def test_list_processes_refuses_what_is_no_pid(pid: int) -> None:
    reply = pb.ListProcessesResponse(pids=[1, pid]).SerializeToString()

    async def body(agent: AgentClient) -> None:
        with pytest.raises(ProtocolError, match=f"ListProcesses: {pid} is not a pid"):
            await agent.list_processes("c")
    _run({"ListProcesses": _reply(reply)}, body)


def test_stats_without_metrics_is_refused() -> None:
    async def body(agent: AgentClient) -> None:
        with pytest.raises(ProtocolError, match="StatsContainer: no metrics"):
            await agent.stats_container("c")
    _run({"StatsContainer": _reply(b"")}, body)


def test_console_tail_strips_terminal_control(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"boot ok\n\x1b]0;pwned\x07\x1b[2Jdone\tx")
    assert log_tail(str(log)) == "boot ok\n?]0;pwned??[2Jdone\tx"


@pytest.mark.parametrize(("cpus", "mem"), [(0, 1 << 30), (9000, 1 << 30), (2, 0)],
                         ids=["no CPU", "too many CPUs", "no memory"])
def test_online_cpu_mem_reply_is_checked(cpus: int, mem: int) -> None:
    reply = pb.OnlineCPUMemResponse(online_cpus=cpus, mem_total_bytes=mem).SerializeToString()

    async def body(agent: AgentClient) -> None:
        with pytest.raises(ProtocolError, match="OnlineCPUMem"):
            await agent.online_cpu_mem(2, 1 << 30, 0.1)
    _run({"OnlineCPUMem": _reply(reply)}, body)


def test_online_cpu_mem_sends_the_wait() -> None:
    seen: list[pb.OnlineCPUMemRequest] = []

    async def handler(data: bytes) -> bytes:
        seen.append(pb.OnlineCPUMemRequest.FromString(data))
        return pb.OnlineCPUMemResponse(online_cpus=2, mem_total_bytes=5).SerializeToString()

    async def body(agent: AgentClient) -> None:
        resp = await agent.online_cpu_mem(2, 768 << 20, 1.5)
        assert (resp.online_cpus, resp.mem_total_bytes) == (2, 5)
    _run({"OnlineCPUMem": handler}, body)
    assert (seen[0].cpus, seen[0].mem_bytes, seen[0].timeout_ms) == (2, 768 << 20, 1500)
