"""Task verbs about a container as a whole: State, Pids, Pause, Resume, Update, Stats and
Checkpoint (not supported).
"""

from __future__ import annotations

import json
import logging

from google.protobuf import empty_pb2

from pykata.domain.errors import (
    INVALID_ARGUMENT,
    UNIMPLEMENTED,
    RpcError,
)
from pykata.protocol.pb import events_pb2 as ev
from pykata.protocol.pb import shim_pb2 as pb
from pykata.shim.bundle import (
    resource_limits,
)
from pykata.shim.core import ServiceCore
from pykata.shim.tasks import CREATED, PAUSE, PAUSED, RESUME, RUNNING

log = logging.getLogger(__name__)

METRICS_URL = "io.containerd.cgroups.v2.Metrics"


class InfoVerbs(ServiceCore):
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

    async def Pids(self, r: pb.PidsRequest) -> pb.PidsResponse:
        self.tasks.get("Pids", r.id)
        pids = await self._agent("Pids").list_processes(r.id)
        return pb.PidsResponse(processes=[pb.ProcessInfo(pid=p) for p in pids])

    async def Pause(self, r: pb.PauseRequest) -> empty_pb2.Empty:
        proc = self.tasks.get("Pause", r.id).init
        proc.require("Pause", RUNNING)
        await self._agent("Pause").pause_container(r.id)
        proc.advance("Pause", PAUSE)
        self.events.publish("/tasks/paused", ev.TaskPaused(container_id=r.id))
        return empty_pb2.Empty()

    async def Resume(self, r: pb.ResumeRequest) -> empty_pb2.Empty:
        proc = self.tasks.get("Resume", r.id).init
        proc.require("Resume", PAUSED)
        await self._agent("Resume").resume_container(r.id)
        proc.advance("Resume", RESUME)
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
