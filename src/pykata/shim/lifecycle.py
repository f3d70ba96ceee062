"""Task verbs of a container's life: Create (the first boots the sandbox), Start, Delete,
Kill, Wait, and the shim's own Connect and Shutdown. Each checks ids and states, calls the
sandbox and the agent, records the outcome and publishes containerd's events, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from google.protobuf import empty_pb2

import pykata
from pykata.domain import ids
from pykata.domain.errors import (
    DEADLINE_EXCEEDED,
    FAILED_PRECONDITION,
    NOT_FOUND,
    UNIMPLEMENTED,
    ProtocolError,
    PykataError,
    RpcError,
)
from pykata.domain.spec import Spec
from pykata.protocol.pb import events_pb2 as ev
from pykata.protocol.pb import shim_pb2 as pb
from pykata.sandbox.sandbox import Sandbox
from pykata.sandbox.state import SandboxState
from pykata.shim.args import PodRole, pod_role
from pykata.shim.bundle import (
    BootRequest,
    config_path_from,
    mount_rootfs,
    read_spec,
    runtime_options,
    task_limits,
    unmount_rootfs,
)
from pykata.shim.core import ServiceCore
from pykata.shim.tasks import CREATED, RUNNING, START, STOPPED, Proc, Stdio, Task

log = logging.getLogger(__name__)

# A created task that is deleted is killed in the guest; its exit arrives this quickly.
_KILLED_EXIT_WAIT = 3.0


class LifecycleVerbs(ServiceCore):
    async def Create(self, r: pb.CreateTaskRequest) -> pb.CreateTaskResponse:
        ids.check_id("task id", r.id)
        if r.checkpoint or r.parent_checkpoint:
            raise RpcError("Create", UNIMPLEMENTED, "checkpoint/restore is not supported")
        async with self._lock:
            self.tasks.reserve("Create", r.id)
            spec = read_spec(r.bundle)
            annotations = spec.doc.get("annotations") or {}
            role = pod_role(r.id, annotations)
            options = runtime_options(r.options.type_url, r.options.value)
            task = Task(r.id, r.bundle,
                        Proc(r.id, "", Stdio(r.stdin, r.stdout, r.stderr, r.terminal)),
                        limits=task_limits(spec, role))
            rootfs = mount_rootfs(task, r, spec)
            created = False
            try:
                sandbox = await self._sandbox_for(r.id, spec, role, options)
                if not role.is_sandbox:  # a pod grows before its new container starts
                    await self._resize(sandbox, [*self.tasks.all(), task])
                warnings = await sandbox.create_container(r.id, spec, rootfs)
                created = True
                await self._relay(task.init)
            except BaseException:
                if created:
                    await self._remove_quietly(r.id)
                unmount_rootfs(task)
                await self._stop_if_idle()
                await self._resize_quietly()
                raise
            for warning in warnings:
                log.warning("task %s: %s", r.id, warning)
            self.tasks.add(task)
        self.events.publish("/tasks/create", ev.TaskCreate(
            container_id=r.id, bundle=r.bundle, pid=self.vm_pid,
            rootfs=[ev.TaskMount(type=m.type, source=m.source, target=m.target,
                                 options=m.options) for m in r.rootfs],
            io=ev.TaskIO(stdin=r.stdin, stdout=r.stdout, stderr=r.stderr,
                         terminal=r.terminal)))
        return pb.CreateTaskResponse(pid=self.vm_pid)

    async def _sandbox_for(self, task_id: str, spec: Spec, role: PodRole,
                           options: pb.RuntimeOptions | None) -> Sandbox:
        if self.sandbox is None:
            if not role.is_sandbox:
                raise RpcError("Create", FAILED_PRECONDITION,
                               f"task {task_id}: its sandbox {role.sandbox_id} is not served "
                               "by this shim")
            config_path = config_path_from(options, self.config_path)
            early = self._early is not None and self._early[0] == task_id
            self.sandbox = (await self._take_early() if early else
                            await self._boot(BootRequest(task_id, spec, role, config_path)))
            assert self.sandbox is not None
            self._vm_watch = asyncio.create_task(self._watch_vm(self.sandbox))
            return self.sandbox
        if role.sandbox_id != self.sandbox.id:
            raise RpcError("Create", FAILED_PRECONDITION,
                           f"task {task_id} belongs to sandbox {role.sandbox_id}, this shim "
                           f"serves {self.sandbox.id}")
        if self.sandbox.state is not SandboxState.RUNNING:
            raise RpcError("Create", FAILED_PRECONDITION,
                           f"sandbox {self.sandbox.id} is {self.sandbox.state.value}")
        return self.sandbox

    async def _watch_vm(self, sandbox: Sandbox) -> None:
        what = await sandbox.wait_vm()
        if sandbox.state is SandboxState.RUNNING:
            log.error("sandbox %s: %s; every task exits with 255", sandbox.id, what)
            await sandbox.stop()  # closes the agent connection: the watchers see 255

    async def Start(self, r: pb.StartRequest) -> pb.StartResponse:
        task = self.tasks.get("Start", r.id)
        proc = task.process("Start", r.exec_id)
        proc.require("Start", CREATED)
        agent = self._agent("Start")
        if not r.exec_id:
            async with proc.starting:
                await agent.start_container(r.id)
                await self._start_stdin(proc)
                proc.advance("Start", START)
                self.events.publish("/tasks/start", ev.TaskStart(container_id=r.id,
                                                                 pid=self.vm_pid))
            return pb.StartResponse(pid=self.vm_pid)
        task.init.require("Start exec", RUNNING)
        relay = await self._open_relay("Start", proc)
        try:
            await agent.exec_process(r.id, r.exec_id, proc.spec_json)
        except BaseException:
            relay.close()
            raise
        proc.advance("Start", START)
        self._start_relay(relay)
        await self._start_stdin(proc)
        self.events.publish("/tasks/exec-started", ev.TaskExecStarted(
            container_id=r.id, exec_id=r.exec_id, pid=self.vm_pid))
        return pb.StartResponse(pid=self.vm_pid)

    async def Delete(self, r: pb.DeleteRequest) -> pb.DeleteResponse:
        task = self.tasks.get("Delete", r.id)
        proc = task.process("Delete", r.exec_id)
        if r.exec_id:
            proc.require("Delete", CREATED, STOPPED)
            await self._forget(proc)
            if proc.status is STOPPED:  # it ran in the guest: the agent forgets it too
                await self._remove_exec(r.id, r.exec_id)
            else:  # never started: a Wait containerd sent before Start must end
                proc.record_exit(128 + signal.SIGKILL)
            del task.execs[r.exec_id]
            return self._delete_response(proc)
        proc.require("Delete", CREATED, STOPPED)
        assert self.sandbox is not None
        # The sandbox's own task, exited, and the last: the VM goes with the shim's
        # Shutdown next, so the guest need not tidy up (crun delete, a resize) first.
        last = r.id == self.sandbox.id and len(self.tasks) == 1 and proc.status is STOPPED
        try:
            # A Delete whose guest call failed already dropped it; a retry must succeed.
            if r.id in self.sandbox.containers:
                await self.sandbox.remove_container(r.id, in_guest=not last)
        finally:
            unmount_rootfs(task)
        if not proc.exited.is_set():  # created, never started: removal killed it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.exited.wait(), _KILLED_EXIT_WAIT)
        for p in [*task.execs.values(), proc]:
            await self._forget(p)
            # Removal killed whatever still ran; a watcher that had not seen it yet is gone,
            # so the exit is recorded (and Waits answered) here.
            if p.record_exit(128 + signal.SIGKILL):
                self._exited(p)
        self.tasks.remove(r.id)
        if not last:
            await self._resize_quietly()
        event = ev.TaskDelete(container_id=r.id, pid=self.vm_pid,
                              exit_status=proc.exit_status, id=r.id)
        event.exited_at.FromNanoseconds(proc.exited_at_ns)
        self.events.publish("/tasks/delete", event)
        return self._delete_response(proc)

    async def _remove_exec(self, task_id: str, exec_id: str) -> None:
        """The agent drops the exec's stdio and files; a VM that is gone took them along."""
        sandbox = self.sandbox
        if sandbox is None or sandbox.state is not SandboxState.RUNNING:
            return
        try:
            await sandbox.agent.remove_process(task_id, exec_id)
        except PykataError as exc:
            log.warning("exec %r of task %r: removing it in the guest: %s", exec_id, task_id,
                        exc)

    async def Kill(self, r: pb.KillRequest) -> empty_pb2.Empty:
        proc = self.tasks.get("Kill", r.id).process("Kill", r.exec_id)
        if proc.exited.is_set():
            raise RpcError("Kill", NOT_FOUND, f"{proc.name}: process already finished")
        if proc.status is CREATED and r.exec_id:
            raise RpcError("Kill", FAILED_PRECONDITION, f"{proc.name} is not started")
        try:
            await self._agent("Kill").signal_process(r.id, r.exec_id, r.signal,
                                                     all=r.all and not r.exec_id)
        except (RpcError, ProtocolError) as exc:
            if r.signal != signal.SIGKILL or not _vm_unresponsive(exc):
                raise
            # A hung guest cannot deliver a SIGKILL; the VM's end does, for every task.
            assert self.sandbox is not None
            log.error("sandbox %s: the agent did not deliver SIGKILL to %s (%s): stopping "
                      "the VM; every task exits with 255", self.sandbox.id, proc.name, exc)
            await self.sandbox.stop()
        return empty_pb2.Empty()

    async def Wait(self, r: pb.WaitRequest) -> pb.WaitResponse:
        proc = self.tasks.get("Wait", r.id).process("Wait", r.exec_id)
        await proc.exited.wait()
        resp = pb.WaitResponse(exit_status=proc.exit_status)
        resp.exited_at.FromNanoseconds(proc.exited_at_ns)
        return resp

    async def Shutdown(self, r: pb.ShutdownRequest) -> empty_pb2.Empty:
        if len(self.tasks) == 0:
            self.shutdown_requested.set()
        else:
            log.debug("shutdown ignored: %d tasks remain", len(self.tasks))
        return empty_pb2.Empty()

    async def Connect(self, r: pb.ConnectRequest) -> pb.ConnectResponse:
        return pb.ConnectResponse(shim_pid=os.getpid(), task_pid=self.vm_pid,
                                  version=f"pykata {pykata.__version__}")


def _vm_unresponsive(exc: PykataError) -> bool:
    """The agent did not answer in time, or its connection is gone."""
    return isinstance(exc, ProtocolError) or (isinstance(exc, RpcError)
                                               and exc.code == DEADLINE_EXCEEDED)
