"""The Task service's state and the steps its verbs share: the sandbox (booted by the first
task), the tasks, their stdio relays, resizes, exit events. The verbs live in
`lifecycle`, `execs` and `info`; `service.TaskService` puts them together.
"""

from __future__ import annotations

import asyncio
import logging

from pykata.domain.errors import (
    FAILED_PRECONDITION,
    INVALID_ARGUMENT,
    PykataError,
    RpcError,
)
from pykata.protocol.pb import events_pb2 as ev
from pykata.protocol.pb import shim_pb2 as pb
from pykata.sandbox.agent_client import AgentClient
from pykata.sandbox.sandbox import Sandbox
from pykata.sandbox.state import SandboxState
from pykata.shim.bundle import (
    Boot,
    BootRequest,
    unmount_rootfs,
)
from pykata.shim.events import Publisher
from pykata.shim.relay import Relay, stop_workers
from pykata.shim.tasks import Proc, Task, Tasks

log = logging.getLogger(__name__)



class ServiceCore:
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

    def _agent(self, method: str) -> AgentClient:
        if self.sandbox is None or self.sandbox.state is not SandboxState.RUNNING:
            raise RpcError(method, FAILED_PRECONDITION, "the sandbox VM is not running")
        return self.sandbox.agent

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
        if proc.oom_killed:  # before the exit: CRI then reports the reason OOMKilled
            self.events.publish("/tasks/oom", ev.TaskOOM(container_id=proc.task_id))
        event = ev.TaskExit(container_id=proc.task_id, id=proc.exec_id or proc.task_id,
                            pid=self.vm_pid, exit_status=proc.exit_status)
        event.exited_at.FromNanoseconds(proc.exited_at_ns)
        self.events.publish("/tasks/exit", event)

    async def _forget(self, proc: Proc) -> None:
        relay = self._relays.pop((proc.task_id, proc.exec_id), None)
        await stop_workers(proc)
        if relay is not None:
            relay.close()

    def _delete_response(self, proc: Proc) -> pb.DeleteResponse:
        resp = pb.DeleteResponse(pid=self.vm_pid, exit_status=proc.exit_status)
        if proc.exited_at_ns:
            resp.exited_at.FromNanoseconds(proc.exited_at_ns)
        return resp

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
