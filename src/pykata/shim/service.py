"""The Task service: containerd's task calls carried out on one sandbox.

The first task creates the sandbox (boots the VM); a pod's other containers join it. Each
method checks ids and states (pykata.shim.tasks), calls the sandbox and the agent, records
the outcome and publishes the event containerd expects, in order. Errors leave as
RpcErrors with containerd's codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal

from google.protobuf import empty_pb2

import pykata
from pykata.domain import ids
from pykata.domain.errors import (
    FAILED_PRECONDITION,
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNIMPLEMENTED,
    PykataError,
    RpcError,
)
from pykata.domain.spec import Spec
from pykata.protocol.pb import events_pb2 as ev
from pykata.protocol.pb import shim_pb2 as pb
from pykata.sandbox.agent_client import AgentClient
from pykata.sandbox.sandbox import Sandbox
from pykata.sandbox.state import SandboxState
from pykata.shim.args import PodRole, pod_role
from pykata.shim.bundle import (
    Boot,
    BootRequest,
    config_path_from,
    mount_rootfs,
    read_spec,
    resource_limits,
    runtime_options,
    task_limits,
    unmount_rootfs,
)
from pykata.shim.events import Publisher
from pykata.shim.relay import Relay, stop_workers
from pykata.shim.tasks import CREATED, PAUSED, RUNNING, STOPPED, Proc, Stdio, Task, Tasks

log = logging.getLogger(__name__)

METRICS_URL = "io.containerd.cgroups.v2.Metrics"
# A created task that is deleted is killed in the guest; its exit arrives this quickly.
_KILLED_EXIT_WAIT = 3.0


class TaskService:
    def __init__(self, namespace: str, publisher: Publisher, boot: Boot,
                 config_path: str = "") -> None:
        self.namespace, self.events, self._boot = namespace, publisher, boot
        self.config_path = config_path
        self.tasks = Tasks()
        self.sandbox: Sandbox | None = None
        self.shutdown_requested = asyncio.Event()
        self._relays: dict[tuple[str, str], Relay] = {}
        self._vm_watch: asyncio.Task[None] | None = None
        self._early: tuple[str, asyncio.Task[Sandbox]] | None = None
        self._lock = asyncio.Lock()  # one Create at a time: the first one boots the VM

    def boot_early(self, req: BootRequest) -> None:
        """Start booting the sandbox now, from the bundle `start` saw; Create for that task
        then finds it booting. The boot overlaps containerd's work between start and
        Create (snapshot mounts, FIFOs, the connection), instead of following it."""
        self._early = (req.task_id, asyncio.create_task(self._boot(req)))

    async def _take_early(self) -> Sandbox | None:
        if self._early is None:
            return None
        _, boot = self._early
        self._early = None
        return await boot

    @property
    def vm_pid(self) -> int:
        """The pid containerd sees for every process: QEMU's (as Kata reports)."""
        vm = self.sandbox.vm if self.sandbox is not None else None
        return vm.qemu.pid if vm is not None else 0

    # ---- create / start / delete -------------------------------------------------

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

    async def _resize(self, sandbox: Sandbox, tasks: list[Task]) -> None:
        target = await sandbox.resize([t.limits for t in tasks])
        log.info("sandbox %s: %d vCPUs, %d MiB for %d tasks", sandbox.id, target.vcpus,
                 target.memory_mib, len(tasks))

    async def _resize_quietly(self) -> None:
        """After a container left: shrink where the VM can. A failure is logged; the
        container is gone either way."""
        sandbox = self.sandbox
        if sandbox is None or sandbox.state is not SandboxState.RUNNING:
            return
        try:
            await self._resize(sandbox, self.tasks.all())
        except PykataError as exc:
            log.warning("sandbox %s: resize after a container left: %s", sandbox.id, exc)

    async def _remove_quietly(self, task_id: str) -> None:
        assert self.sandbox is not None
        try:
            await self.sandbox.remove_container(task_id)
        except PykataError as exc:
            log.error("task %s: removing after a failed create: %s", task_id, exc)

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

    async def _stop_if_idle(self) -> None:
        if self.sandbox is not None and not self.tasks.all() and not self.sandbox.containers:
            await self.sandbox.stop()

    async def _open_relay(self, method: str, proc: Proc) -> Relay:
        """The process's FIFOs, opened before the guest process exists: a bad path fails
        the call with nothing started."""
        assert self.sandbox is not None
        relay = Relay(self.sandbox.agent, proc, self._exited)
        try:
            await relay.open()
        except PykataError as exc:
            raise RpcError(method, INVALID_ARGUMENT, str(exc)) from None
        return relay

    def _start_relay(self, relay: Relay) -> None:
        self._relays[(relay.proc.task_id, relay.proc.exec_id)] = relay
        relay.start()

    async def _relay(self, proc: Proc) -> None:
        self._start_relay(await self._open_relay("Create", proc))

    async def _start_stdin(self, proc: Proc) -> None:
        try:
            await self._relays[(proc.task_id, proc.exec_id)].start_stdin()
        except PykataError as exc:
            raise RpcError("Start", INVALID_ARGUMENT, str(exc)) from None

    def _exited(self, proc: Proc) -> None:
        log.info("%s exited with status %d", proc.name, proc.exit_status)
        event = ev.TaskExit(container_id=proc.task_id, id=proc.exec_id or proc.task_id,
                            pid=self.vm_pid, exit_status=proc.exit_status)
        event.exited_at.FromNanoseconds(proc.exited_at_ns)
        self.events.publish("/tasks/exit", event)

    async def Start(self, r: pb.StartRequest) -> pb.StartResponse:
        task = self.tasks.get("Start", r.id)
        proc = task.process("Start", r.exec_id)
        proc.require("Start", CREATED)
        agent = self._agent("Start")
        if not r.exec_id:
            async with proc.starting:
                await agent.start_container(r.id)
                await self._start_stdin(proc)
                if proc.status is CREATED:
                    proc.status = RUNNING
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
        proc.status = RUNNING
        self._start_relay(relay)
        await self._start_stdin(proc)
        self.events.publish("/tasks/exec-started", ev.TaskExecStarted(
            container_id=r.id, exec_id=r.exec_id, pid=self.vm_pid))
        return pb.StartResponse(pid=self.vm_pid)

    def _agent(self, method: str) -> AgentClient:
        if self.sandbox is None or self.sandbox.state is not SandboxState.RUNNING:
            raise RpcError(method, FAILED_PRECONDITION, "the sandbox VM is not running")
        return self.sandbox.agent

    async def Delete(self, r: pb.DeleteRequest) -> pb.DeleteResponse:
        task = self.tasks.get("Delete", r.id)
        proc = task.process("Delete", r.exec_id)
        if r.exec_id:
            proc.require("Delete", CREATED, STOPPED)
            await self._forget(proc)
            del task.execs[r.exec_id]
            return self._delete_response(proc)
        proc.require("Delete", CREATED, STOPPED)
        assert self.sandbox is not None
        try:
            # A Delete whose guest call failed already dropped it; a retry must succeed.
            if r.id in self.sandbox.containers:
                await self.sandbox.remove_container(r.id)
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
        await self._resize_quietly()
        event = ev.TaskDelete(container_id=r.id, pid=self.vm_pid,
                              exit_status=proc.exit_status, id=r.id)
        event.exited_at.FromNanoseconds(proc.exited_at_ns)
        self.events.publish("/tasks/delete", event)
        return self._delete_response(proc)

    def _delete_response(self, proc: Proc) -> pb.DeleteResponse:
        resp = pb.DeleteResponse(pid=self.vm_pid, exit_status=proc.exit_status)
        if proc.exited_at_ns:
            resp.exited_at.FromNanoseconds(proc.exited_at_ns)
        return resp

    async def _forget(self, proc: Proc) -> None:
        relay = self._relays.pop((proc.task_id, proc.exec_id), None)
        await stop_workers(proc)
        if relay is not None:
            relay.close()

    # ---- processes -----------------------------------------------------------------

    async def Exec(self, r: pb.ExecProcessRequest) -> empty_pb2.Empty:
        task = self.tasks.get("Exec", r.id)
        ids.check_id("exec id", r.exec_id)
        task.init.require("Exec", RUNNING)
        proc = Proc(r.id, r.exec_id, Stdio(r.stdin, r.stdout, r.stderr, r.terminal),
                    spec_json=r.spec.value)
        task.add_exec("Exec", proc)
        self.events.publish("/tasks/exec-added",
                            ev.TaskExecAdded(container_id=r.id, exec_id=r.exec_id))
        return empty_pb2.Empty()

    async def Kill(self, r: pb.KillRequest) -> empty_pb2.Empty:
        proc = self.tasks.get("Kill", r.id).process("Kill", r.exec_id)
        if proc.exited.is_set():
            raise RpcError("Kill", NOT_FOUND, f"{proc.name}: process already finished")
        if proc.status is CREATED and r.exec_id:
            raise RpcError("Kill", FAILED_PRECONDITION, f"{proc.name} is not started")
        await self._agent("Kill").signal_process(r.id, r.exec_id, r.signal,
                                                 all=r.all and not r.exec_id)
        return empty_pb2.Empty()

    async def Wait(self, r: pb.WaitRequest) -> pb.WaitResponse:
        proc = self.tasks.get("Wait", r.id).process("Wait", r.exec_id)
        await proc.exited.wait()
        resp = pb.WaitResponse(exit_status=proc.exit_status)
        resp.exited_at.FromNanoseconds(proc.exited_at_ns)
        return resp

    async def State(self, r: pb.StateRequest) -> pb.StateResponse:
        task = self.tasks.get("State", r.id)
        proc = task.process("State", r.exec_id)
        resp = pb.StateResponse(
            id=r.id, exec_id=r.exec_id, bundle=task.bundle, pid=self.vm_pid,
            status=proc.status, stdin=proc.stdio.stdin, stdout=proc.stdio.stdout,
            stderr=proc.stdio.stderr, terminal=proc.stdio.terminal,
            exit_status=proc.exit_status)
        if proc.exited_at_ns:
            resp.exited_at.FromNanoseconds(proc.exited_at_ns)
        return resp

    async def ResizePty(self, r: pb.ResizePtyRequest) -> empty_pb2.Empty:
        proc = self.tasks.get("ResizePty", r.id).process("ResizePty", r.exec_id)
        if proc.stdio.terminal and not proc.exited.is_set():
            await self._agent("ResizePty").tty_win_resize(r.id, r.exec_id, r.height, r.width)
        return empty_pb2.Empty()

    async def CloseIO(self, r: pb.CloseIORequest) -> empty_pb2.Empty:
        self.tasks.get("CloseIO", r.id).process("CloseIO", r.exec_id)
        relay = self._relays.get((r.id, r.exec_id))
        if r.stdin and relay is not None:
            relay.close_stdin()
        return empty_pb2.Empty()

    # ---- the container as a whole ----------------------------------------------------

    async def Pids(self, r: pb.PidsRequest) -> pb.PidsResponse:
        self.tasks.get("Pids", r.id)
        pids = await self._agent("Pids").list_processes(r.id)
        return pb.PidsResponse(processes=[pb.ProcessInfo(pid=p) for p in pids])

    async def Pause(self, r: pb.PauseRequest) -> empty_pb2.Empty:
        proc = self.tasks.get("Pause", r.id).init
        proc.require("Pause", RUNNING)
        await self._agent("Pause").pause_container(r.id)
        proc.status = PAUSED
        self.events.publish("/tasks/paused", ev.TaskPaused(container_id=r.id))
        return empty_pb2.Empty()

    async def Resume(self, r: pb.ResumeRequest) -> empty_pb2.Empty:
        proc = self.tasks.get("Resume", r.id).init
        proc.require("Resume", PAUSED)
        await self._agent("Resume").resume_container(r.id)
        if proc.status is PAUSED:
            proc.status = RUNNING
        self.events.publish("/tasks/resumed", ev.TaskResumed(container_id=r.id))
        return empty_pb2.Empty()

    async def Update(self, r: pb.UpdateTaskRequest) -> empty_pb2.Empty:
        task = self.tasks.get("Update", r.id)
        task.init.require("Update", CREATED, RUNNING, PAUSED)
        try:
            resources = json.loads(r.resources.value or b"{}")
        except ValueError as exc:
            raise RpcError("Update", INVALID_ARGUMENT, f"resources: not JSON: {exc}") from None
        if not isinstance(resources, dict):
            raise RpcError("Update", INVALID_ARGUMENT, "resources: not a JSON object")
        limits = resource_limits(resources)
        if self.sandbox is not None and limits != task.limits:
            task.limits = limits  # grow before the container may use more
            await self._resize(self.sandbox, self.tasks.all())
        await self._agent("Update").update_container(r.id, json.dumps(resources).encode())
        task.resources = resources
        return empty_pb2.Empty()

    async def Stats(self, r: pb.StatsRequest) -> pb.StatsResponse:
        self.tasks.get("Stats", r.id)
        stats = await self._agent("Stats").stats_container(r.id)
        resp = pb.StatsResponse()
        resp.stats.type_url = METRICS_URL
        resp.stats.value = stats.metrics.SerializeToString()
        return resp

    async def Checkpoint(self, r: pb.CheckpointTaskRequest) -> empty_pb2.Empty:
        raise RpcError("Checkpoint", UNIMPLEMENTED, "checkpoint is not supported by pykata")

    async def Connect(self, r: pb.ConnectRequest) -> pb.ConnectResponse:
        return pb.ConnectResponse(shim_pid=os.getpid(), task_pid=self.vm_pid,
                                  version=f"pykata {pykata.__version__}")

    async def Shutdown(self, r: pb.ShutdownRequest) -> empty_pb2.Empty:
        if len(self.tasks) == 0:
            self.shutdown_requested.set()
        else:
            log.debug("shutdown ignored: %d tasks remain", len(self.tasks))
        return empty_pb2.Empty()

    async def close(self) -> None:
        """Stop every worker and the sandbox (the shim is exiting)."""
        if self._early is not None:  # booted for a Create that never came
            boot = self._early[1]
            self._early = None
            boot.cancel()
            result = (await asyncio.gather(boot, return_exceptions=True))[0]
            if isinstance(result, Sandbox):
                self.sandbox = result
        for task in self.tasks.all():
            for proc in [*task.execs.values(), task.init]:
                await self._forget(proc)
            unmount_rootfs(task)
        if self.sandbox is not None:
            await self.sandbox.stop()
        if self._vm_watch is not None:
            self._vm_watch.cancel()
            await asyncio.gather(self._vm_watch, return_exceptions=True)
