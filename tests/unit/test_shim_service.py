"""The Task service's task and exec lifecycles against the fakes in shim_fakes: no VM, no
containerd. Each scenario drives TaskService the way containerd does (FACTS.md §4) and checks
replies, error codes, the agent calls and the events published, in order.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from google.protobuf.message import Message
from shim_fakes import QEMU_PID, Shim, rpc_error, scenario

from pykata.domain.errors import (
    ALREADY_EXISTS,
    DEADLINE_EXCEEDED,
    FAILED_PRECONDITION,
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNIMPLEMENTED,
    RpcError,
)
from pykata.protocol.pb import shim_pb2 as pb


def test_run_wait_delete_shutdown(tmp_path: Path) -> None:
    """`ctr run --rm`: Create, Wait (before Start), Start, exit, State, Delete, Shutdown."""
    async def body(shim: Shim) -> None:
        created = await shim.create("c1", stdout=f"file://{tmp_path}/out.log")
        assert created.pid == QEMU_PID
        [boot] = shim.boots
        assert (boot.task_id, boot.role.sandbox_id, boot.config_path) == \
            ("c1", "c1", "/etc/pykata.toml")
        assert shim.sandbox.containers == {"c1": str(tmp_path / "c1" / "rootfs")}
        assert (await shim.state("c1")).status == pb.CREATED
        waiting = asyncio.ensure_future(shim.wait("c1"))
        shim.agent.proc("c1").stdout = [b"hello\n", b"world\n"]
        assert (await shim.start("c1")).pid == QEMU_PID
        assert (await shim.state("c1")).status == pb.RUNNING
        assert not waiting.done()
        before = time.time()
        shim.agent.finish("c1", status=3)
        waited = await waiting
        after = time.time()
        assert waited.exit_status == 3
        assert before <= waited.exited_at.ToNanoseconds() / 1e9 <= after
        # All output reached containerd's side before the exit was reported.
        assert (tmp_path / "out.log").read_bytes() == b"hello\nworld\n"
        state = await shim.state("c1")
        assert (state.status, state.exit_status) == (pb.STOPPED, 3)
        assert state.exited_at == waited.exited_at
        await shim.service.Shutdown(pb.ShutdownRequest(id="c1"))
        assert not shim.service.shutdown_requested.is_set()  # c1 still exists
        deleted = await shim.delete("c1")
        assert (deleted.pid, deleted.exit_status) == (QEMU_PID, 3)
        assert deleted.exited_at == waited.exited_at
        assert shim.sandbox.containers == {}
        await rpc_error(NOT_FOUND, shim.state("c1"), "no task 'c1'")
        await shim.service.Shutdown(pb.ShutdownRequest(id="c1"))
        assert shim.service.shutdown_requested.is_set()
        assert shim.events.topics == ["/tasks/create", "/tasks/start", "/tasks/exit",
                                      "/tasks/delete"]
        create = shim.events.last("/tasks/create")
        assert (create.container_id, create.bundle, create.pid) == \
            ("c1", str(tmp_path / "c1"), QEMU_PID)
        assert create.io.stdout == f"file://{tmp_path}/out.log"
        exit_ = shim.events.last("/tasks/exit")
        assert (exit_.container_id, exit_.id, exit_.pid, exit_.exit_status) == \
            ("c1", "c1", QEMU_PID, 3)
        assert exit_.exited_at == waited.exited_at
        delete = shim.events.last("/tasks/delete")
        assert (delete.container_id, delete.id, delete.exit_status) == ("c1", "c1", 3)
    shim = scenario(tmp_path, body)
    assert shim.sandbox.stops == 1  # close() after Shutdown stops the VM


def test_exit_during_start_is_published_after_start(tmp_path: Path) -> None:
    """The agent may answer WaitProcess before StartContainer (a process that exits at
    once); containerd must still hear start before exit."""
    async def body(shim: Shim) -> None:
        await shim.create("c1")

        async def exit_at_once(cid: str) -> None:
            shim.agent.finish(cid, status=0)
            while shim.agent.proc(cid).waits_answered == 0:
                await asyncio.sleep(0)
            await asyncio.sleep(0.01)  # the shim's watcher runs while the reply is on its way
        shim.agent.on_start = exit_at_once
        await shim.start("c1")
        assert (await shim.wait("c1")).exit_status == 0
        assert shim.events.topics == ["/tasks/create", "/tasks/start", "/tasks/exit"]
    scenario(tmp_path, body)


def test_delete_of_a_created_task_kills_it(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        await shim.create("c1")
        deleted = await shim.delete("c1")
        assert deleted.exit_status == 128 + 9
        assert shim.agent.called("remove_container") == [("c1",)]
        assert shim.events.topics == ["/tasks/create", "/tasks/exit", "/tasks/delete"]
    scenario(tmp_path, body)


def test_delete_can_be_retried_after_the_guest_failed_to_remove(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        await shim.create("c1")  # never started: the guest must remove (kill) it
        shim.agent.remove_errors.append(
            RpcError("RemoveContainer", DEADLINE_EXCEEDED, "no answer within 10s"))
        await rpc_error(DEADLINE_EXCEEDED, shim.delete("c1"))
        assert (await shim.delete("c1")).exit_status == 128 + 9
        assert shim.events.topics[-1] == "/tasks/delete"
        await shim.service.Shutdown(pb.ShutdownRequest(id="c1"))
        assert shim.service.shutdown_requested.is_set()
    scenario(tmp_path, body)


def test_the_last_exited_task_of_a_sandbox_is_not_removed_in_the_guest(tmp_path: Path
                                                                         ) -> None:
    async def body(shim: Shim) -> None:
        await shim.create("c1")
        await shim.start("c1")
        shim.agent.finish("c1", status=0)
        await shim.wait("c1")
        assert (await shim.delete("c1")).exit_status == 0
        assert shim.agent.called("remove_container") == []  # the VM goes at Shutdown
    scenario(tmp_path, body)


def test_task_errors(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        await rpc_error(NOT_FOUND, shim.start("nope"), "no task 'nope'")
        await rpc_error(NOT_FOUND, shim.wait("nope"), "no task 'nope'")
        await rpc_error(NOT_FOUND, shim.service.Kill(pb.KillRequest(id="nope", signal=9)))
        await shim.create("c1")
        await rpc_error(ALREADY_EXISTS, shim.create("c1"), "task 'c1' already exists")
        await rpc_error(NOT_FOUND, shim.state("c1", "e1"), "no exec 'e1' in task 'c1'")
        await shim.start("c1")
        await rpc_error(FAILED_PRECONDITION, shim.start("c1"),
                        "task 'c1' is running; Start needs created")
        await rpc_error(FAILED_PRECONDITION, shim.delete("c1"),
                        "task 'c1' is running; Delete needs created or stopped")
        await shim.service.Kill(pb.KillRequest(id="c1", signal=9, all=True))
        assert shim.agent.called("signal_process") == [("c1", "", 9, True)]
        await shim.wait("c1")
        await rpc_error(NOT_FOUND, shim.service.Kill(pb.KillRequest(id="c1", signal=9)),
                        "task 'c1': process already finished")
        await rpc_error(UNIMPLEMENTED,
                        shim.service.Checkpoint(pb.CheckpointTaskRequest(id="c1")))
        await rpc_error(UNIMPLEMENTED, shim.service.Create(pb.CreateTaskRequest(
            id="c2", bundle=shim.bundle("c2"), checkpoint="/cp")))
        await rpc_error(INVALID_ARGUMENT, shim.service.Create(pb.CreateTaskRequest(
            id="c3", bundle=str(tmp_path / "missing"))), "config.json")
    scenario(tmp_path, body)


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("State", pb.StateRequest(id="nope")),
        ("Start", pb.StartRequest(id="nope")),
        ("Delete", pb.DeleteRequest(id="nope")),
        ("Wait", pb.WaitRequest(id="nope")),
        ("Kill", pb.KillRequest(id="nope", signal=9)),
        ("Exec", pb.ExecProcessRequest(id="nope", exec_id="e1")),
        ("ResizePty", pb.ResizePtyRequest(id="nope")),
        ("CloseIO", pb.CloseIORequest(id="nope", stdin=True)),
        ("Pids", pb.PidsRequest(id="nope")),
        ("Pause", pb.PauseRequest(id="nope")),
        ("Resume", pb.ResumeRequest(id="nope")),
        ("Update", pb.UpdateTaskRequest(id="nope")),
        ("Stats", pb.StatsRequest(id="nope")),
    ],
)
def test_unknown_task_is_not_found(tmp_path: Path, method: str, request_: Message) -> None:
    async def body(shim: Shim) -> None:
        await shim.create("c1")
        await rpc_error(NOT_FOUND, getattr(shim.service, method)(request_), "no task 'nope'")
    scenario(tmp_path, body)


def test_exec_lifecycle(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        await shim.create("c1")
        await rpc_error(FAILED_PRECONDITION, shim.exec("c1", "e1"),
                        "task 'c1' is created; Exec needs running")
        await shim.start("c1")
        await shim.exec("c1", "e1", stdout=f"file://{tmp_path}/e1.log")
        await rpc_error(ALREADY_EXISTS, shim.exec("c1", "e1"),
                        "exec 'e1' already exists in task 'c1'")
        await rpc_error(FAILED_PRECONDITION,
                        shim.service.Kill(pb.KillRequest(id="c1", exec_id="e1", signal=15)),
                        "is not started")
        assert (await shim.state("c1", "e1")).status == pb.CREATED
        shim.agent.proc("c1", "e1").stdout = [b"bin\netc\n"]
        await shim.start("c1", "e1")
        assert shim.agent.called("exec_process") == [("c1", "e1", {"args": ["ls"], "cwd": "/"})]
        await rpc_error(FAILED_PRECONDITION, shim.delete("c1", "e1"))
        shim.agent.finish("c1", "e1", status=2)
        assert (await shim.wait("c1", "e1")).exit_status == 2
        assert (tmp_path / "e1.log").read_bytes() == b"bin\netc\n"
        assert (await shim.delete("c1", "e1")).exit_status == 2
        assert shim.agent.called("remove_process") == [("c1", "e1")]  # the guest forgets it
        await rpc_error(NOT_FOUND, shim.state("c1", "e1"))
        await shim.exec("c1", "e1")  # the id is free again
        await shim.start("c1", "e1")
        await shim.service.Kill(pb.KillRequest(id="c1", exec_id="e1", signal=15, all=True))
        assert shim.agent.called("signal_process") == [("c1", "e1", 15, False)]
        assert (await shim.wait("c1", "e1")).exit_status == 128 + 15
        assert shim.events.topics == ["/tasks/create", "/tasks/start", "/tasks/exec-added",
                                      "/tasks/exec-started", "/tasks/exit",
                                      "/tasks/exec-added", "/tasks/exec-started",
                                      "/tasks/exit"]
        assert [(e.container_id, e.id, e.exit_status) for e in shim.events.of("/tasks/exit")] \
            == [("c1", "e1", 2), ("c1", "e1", 128 + 15)]
        assert (await shim.state("c1")).status == pb.RUNNING  # the init is untouched
    scenario(tmp_path, body)


def test_shutdown_with_no_task_is_honoured(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        await shim.service.Shutdown(pb.ShutdownRequest(id="c1"))
        assert shim.service.shutdown_requested.is_set()
    scenario(tmp_path, body)


def test_sigkill_a_hung_guest_cannot_deliver_stops_the_vm(tmp_path: Path) -> None:
    """A frozen guest: SignalProcess times out. A SIGKILL then ends the VM (every task exits
    255); any other signal's failure is the caller's to see."""
    async def body(shim: Shim) -> None:
        await shim.create("c1")
        await shim.start("c1")

        async def hung(*args: object, **kwargs: object) -> None:
            raise RpcError("SignalProcess", DEADLINE_EXCEEDED, "no answer within 10s")

        shim.agent.signal_process = hung  # type: ignore[method-assign]
        await rpc_error(DEADLINE_EXCEEDED,
                        shim.service.Kill(pb.KillRequest(id="c1", signal=15)), "no answer")
        assert shim.sandbox.stops == 0
        await shim.service.Kill(pb.KillRequest(id="c1", signal=9))
        assert shim.sandbox.stops == 1
        assert (await shim.wait("c1")).exit_status == 255

    scenario(tmp_path, body)


def test_deleting_an_exec_that_never_started_ends_its_wait(tmp_path: Path) -> None:
    """containerd sends Wait before Start; when Start never comes (or fails), Delete must end
    that Wait, or it stays pending in the shim for the task's life."""
    async def body(shim: Shim) -> None:
        await shim.create("c1")
        await shim.start("c1")
        await shim.exec("c1", "e1")
        waiting = asyncio.ensure_future(shim.wait("c1", "e1"))
        await asyncio.sleep(0)
        assert (await shim.delete("c1", "e1")).exit_status == 128 + 9
        assert (await asyncio.wait_for(waiting, 1)).exit_status == 128 + 9
        assert shim.agent.called("remove_process") == []  # the guest never had it
    scenario(tmp_path, body)


def test_an_oom_kill_is_published_before_the_exit(tmp_path: Path) -> None:
    """The guest's OOM killer struck the container: /tasks/oom, then /tasks/exit (CRI then
    reports the reason OOMKilled)."""
    async def body(shim: Shim) -> None:
        await shim.create("c1")
        await shim.start("c1")
        shim.agent.proc("c1").oom_killed = True
        shim.agent.finish("c1", status=137)
        assert (await shim.wait("c1")).exit_status == 137
        assert shim.events.topics[-2:] == ["/tasks/oom", "/tasks/exit"]
        assert shim.events.last("/tasks/oom").container_id == "c1"
    scenario(tmp_path, body)
