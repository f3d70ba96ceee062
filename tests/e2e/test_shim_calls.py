"""The agent calls a containerd shim makes, against a real VM (crun, cgroup v2 in the
guest): terminals and their size, pause/resume, process lists, signalling every process,
resource updates and cgroup statistics. Drives a Sandbox and its AgentClient directly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from e2e_support import Pykata

from pykata.agent.cgroups import UINT64_MAX
from pykata.domain.errors import RpcError
from pykata.domain.spec import default_spec, parse_spec
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.sandbox.agent_client import AgentClient
from pykata.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.e2e

Scenario = Callable[[Sandbox, AgentClient], Awaitable[None]]


def _with_sandbox(pykata: Pykata, scenario: Scenario) -> None:
    async def main() -> None:
        sandbox = Sandbox.from_parts(load_config(str(pykata.config)), read_host_facts(),
                                     resizable=False)
        try:
            await sandbox.start()
            await asyncio.wait_for(scenario(sandbox, sandbox.agent), 180)
        finally:
            await sandbox.stop()

    asyncio.run(main())


async def _create(sandbox: Sandbox, pykata: Pykata, cid: str, args: list[str],
                  terminal: bool = False, resources: dict[str, Any] | None = None) -> None:
    doc = default_spec(args, terminal=terminal)
    if resources:
        doc["linux"]["resources"] = resources
    await sandbox.create_container(cid, parse_spec(doc, "test spec"),
                                   str(pykata.image_dir / "rootfs" / "busybox"))


async def _read_all(agent: AgentClient, cid: str, exec_id: str = "") -> bytes:
    chunks = []
    while chunk := await agent.read_stdout(cid, exec_id):
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_until(agent: AgentClient, cid: str, want: bytes) -> bytes:
    seen = b""
    while want not in seen and (chunk := await agent.read_stdout(cid)):
        seen += chunk
    return seen


def _exec_json(*args: str, terminal: bool = False) -> bytes:
    return json.dumps({"args": list(args), "cwd": "/", "terminal": terminal,
                       "env": ["PATH=/bin:/usr/bin", "TERM=xterm"],
                       "user": {"uid": 0, "gid": 0}}).encode()


def test_terminals_of_a_container_and_an_exec(pykata: Pykata) -> None:
    async def scenario(sandbox: Sandbox, agent: AgentClient) -> None:
        await _create(sandbox, pykata, "t1", ["sh", "-c",
                      'stty size; read line; echo "got:$line"; stty size; exit 3'],
                      terminal=True)
        await agent.tty_win_resize("t1", "", 40, 100)
        await agent.start_container("t1")
        assert await agent.read_stderr("t1") == b""  # the terminal carries both streams
        assert (await _read_until(agent, "t1", b"\n")).startswith(b"40 100\r\n")
        # An exec with a terminal of its own, sized before it reads its input.
        await agent.exec_process("t1", "e1", _exec_json(
            "sh", "-c", "read x; stty size; echo exec-$x", terminal=True))
        await agent.tty_win_resize("t1", "e1", 33, 99)
        await agent.write_stdin("t1", "e1", b"go\n")
        await agent.close_stdin("t1", "e1")  # accepted; the output still comes
        assert await _read_all(agent, "t1", "e1") == b"go\r\n33 99\r\nexec-go\r\n"
        assert await agent.wait_process("t1", "e1") == 0
        # The container's terminal, resized while it waits for input.
        await agent.tty_win_resize("t1", "", 50, 132)
        await agent.write_stdin("t1", "", b"hello\n")
        assert (await _read_all(agent, "t1")).endswith(b"hello\r\ngot:hello\r\n50 132\r\n")
        assert await agent.wait_process("t1") == 3

    _with_sandbox(pykata, scenario)


def test_pause_processes_stats_update_and_kill_all(pykata: Pykata) -> None:
    async def scenario(sandbox: Sandbox, agent: AgentClient) -> None:
        limits = {"memory": {"limit": 256 << 20}, "pids": {"limit": 64}}
        # As PID 1 of its pid namespace, sh ignores SIGTERM: only its children die of it.
        script = ("sleep 1000 & sleep 1000 & i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; "
                  "echo busy; wait; echo waited")
        await _create(sandbox, pykata, "c1", ["sh", "-c", script], resources=limits)
        await agent.start_container("c1")
        assert await _read_until(agent, "c1", b"busy\n") == b"busy\n"
        await agent.exec_process("c1", "e1", _exec_json("sleep", "1000"))
        pids = await agent.list_processes("c1")
        assert len(pids) == 4 and len(set(pids)) == 4, pids

        m = (await agent.stats_container("c1")).metrics
        assert (m.pids.current, m.pids.limit) == (4, 64)
        assert m.cpu.usage_usec > 0 and m.cpu.usage_usec >= m.cpu.user_usec
        assert 0 < m.memory.usage < m.memory.usage_limit == 256 << 20
        assert m.memory.anon > 0 and m.memory.file_mapped > 0
        assert m.HasField("memory_events")

        await agent.update_container("c1", json.dumps(
            {"memory": {"limit": 128 << 20}, "pids": {"limit": 32}}).encode())
        m = (await agent.stats_container("c1")).metrics
        assert (m.memory.usage_limit, m.pids.limit) == (128 << 20, 32)
        await agent.update_container("c1", b'{"memory": {"limit": -1}}')  # no limit
        m = (await agent.stats_container("c1")).metrics
        assert m.memory.usage_limit == UINT64_MAX

        await agent.pause_container("c1")
        with pytest.raises(RpcError, match="state is paused, requires running"):
            await agent.exec_process("c1", "e2", _exec_json("true"))
        await agent.resume_container("c1")

        await agent.signal_process("c1", "", 15, all=True)
        assert await _read_all(agent, "c1") == b"waited\n"
        assert await agent.wait_process("c1") == 0
        assert await agent.wait_process("c1", "e1") == 128 + 15
        with pytest.raises(RpcError, match="FAILED_PRECONDITION"):
            await agent.pause_container("c1")

    _with_sandbox(pykata, scenario)


def test_pause_freezes_and_a_paused_container_can_be_removed(pykata: Pykata) -> None:
    async def cpu_usec(agent: AgentClient) -> int:
        return (await agent.stats_container("c2")).metrics.cpu.usage_usec

    async def scenario(sandbox: Sandbox, agent: AgentClient) -> None:
        await _create(sandbox, pykata, "c2", ["sh", "-c", "while true; do :; done"])
        await agent.start_container("c2")
        await agent.pause_container("c2")
        frozen = await cpu_usec(agent)
        await asyncio.sleep(0.5)
        assert await cpu_usec(agent) == frozen
        await agent.resume_container("c2")
        await asyncio.sleep(0.5)
        assert await cpu_usec(agent) > frozen
        await agent.pause_container("c2")
        waiter = asyncio.ensure_future(agent.wait_process("c2"))
        await agent.remove_container("c2")  # its frozen processes die all the same
        assert await waiter == 128 + 9

    _with_sandbox(pykata, scenario)
