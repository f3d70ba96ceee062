"""The ttrpc handler table: method name -> coroutine(request bytes) -> response bytes.

Decodes each agent_pb2 request, calls the sandbox or container service, encodes the
response. The one place where agent errors become RpcError codes (NOT_FOUND,
ALREADY_EXISTS, INVALID_ARGUMENT, FAILED_PRECONDITION, INTERNAL). No logic of its own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from google.protobuf.message import Message

import pykata
from pykata.agent import clone
from pykata.agent.console import MARKS
from pykata.agent.containers import Containers
from pykata.agent.guest import read_guest_details, read_metrics_files
from pykata.agent.hotplug import online_cpu_mem
from pykata.agent.portforward import PortForwards
from pykata.agent.sandbox import Sandbox
from pykata.agent.storage import Storage
from pykata.domain import errors
from pykata.domain.errors import (
    BadValue,
    ConfigError,
    DuplicateId,
    NetworkError,
    RpcError,
    RuntimeFailed,
    SpecError,
    StateError,
    UnknownId,
)
from pykata.protocol.pb import agent_pb2 as pb
from pykata.protocol.services import Handler, service_table, unary

if TYPE_CHECKING:
    from pykata.agent.cgroups import CgroupStats

AGENT_SERVICE = "pykata.agent.v1.AgentService"
HEALTH_SERVICE = "pykata.agent.v1.Health"

_CODES: tuple[tuple[type[Exception], int], ...] = (
    (UnknownId, errors.NOT_FOUND),
    (DuplicateId, errors.ALREADY_EXISTS),
    (BadValue, errors.INVALID_ARGUMENT),
    (SpecError, errors.INVALID_ARGUMENT),
    (ConfigError, errors.INVALID_ARGUMENT),
    (NetworkError, errors.INVALID_ARGUMENT),
    (StateError, errors.FAILED_PRECONDITION),
    (RuntimeFailed, errors.INTERNAL),
    (OSError, errors.INTERNAL),
)


def rpc_error(method: str, exc: Exception) -> RpcError:
    if isinstance(exc, RpcError):
        return exc
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return RpcError(method, code, str(exc))
    return RpcError(method, errors.UNKNOWN, f"{type(exc).__name__}: {exc}")


def _storages(items: Sequence[pb.Storage]) -> list[Storage]:
    return [Storage(s.driver, s.source, s.fstype, tuple(s.options), s.mount_point)
            for s in items]


def _fill(message: Message, values: Mapping[str, int]) -> None:
    """Sets the fields `values` names that `message` has (the kernel adds keys over time)."""
    message.SetInParent()
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in values.items():
        if key in fields:
            setattr(message, key, value)


def metrics(stats: CgroupStats) -> pb.CgroupMetrics:
    m = pb.CgroupMetrics()
    for name in ("pids", "cpu", "memory", "memory_events"):
        values = getattr(stats, name)
        if values is not None:
            _fill(getattr(m, name), values)
    if stats.io is not None:
        m.io.SetInParent()
        for entry in stats.io:
            _fill(m.io.usage.add(), entry)
    return m


class AgentHandlers:
    """One coroutine per RPC, pb request in, pb response out."""

    def __init__(self, sandbox: Sandbox, containers: Containers,
                 forwards: PortForwards | None = None) -> None:
        self.sandbox, self.containers = sandbox, containers
        self.forwards = forwards or PortForwards()

    async def CreateSandbox(self, r: pb.CreateSandboxRequest) -> pb.Empty:
        self.sandbox.create(r.sandbox_id, r.hostname, _storages(r.storages))
        return pb.Empty()

    async def DestroySandbox(self, r: pb.DestroySandboxRequest) -> pb.Empty:
        await self.sandbox.destroy()
        return pb.Empty()

    async def CreateContainer(self, r: pb.CreateContainerRequest) -> pb.Empty:
        await self.containers.create(r.container_id, r.oci_spec_json, _storages(r.storages))
        return pb.Empty()

    async def StartContainer(self, r: pb.StartContainerRequest) -> pb.Empty:
        await self.containers.start(r.container_id)
        return pb.Empty()

    async def RemoveContainer(self, r: pb.RemoveContainerRequest) -> pb.Empty:
        await self.containers.remove(r.container_id, r.timeout)
        return pb.Empty()

    async def ExecProcess(self, r: pb.ExecProcessRequest) -> pb.Empty:
        await self.containers.exec(r.container_id, r.exec_id, r.process_json)
        return pb.Empty()

    async def RemoveProcess(self, r: pb.RemoveProcessRequest) -> pb.Empty:
        self.containers.remove_process(r.container_id, r.exec_id)
        return pb.Empty()

    async def SignalProcess(self, r: pb.SignalProcessRequest) -> pb.Empty:
        await self.containers.signal(r.container_id, r.exec_id, r.signal, r.all)
        return pb.Empty()

    async def WaitProcess(self, r: pb.WaitProcessRequest) -> pb.WaitProcessResponse:
        status = await self.containers.wait(r.container_id, r.exec_id)
        oom = not r.exec_id and self.containers.oom_killed(r.container_id)
        return pb.WaitProcessResponse(status=status, oom_killed=oom)

    async def ReadStdout(self, r: pb.ReadStreamRequest) -> pb.ReadStreamResponse:
        data = await self.containers.read(r.container_id, r.exec_id, "stdout", r.len)
        return pb.ReadStreamResponse(data=data)

    async def ReadStderr(self, r: pb.ReadStreamRequest) -> pb.ReadStreamResponse:
        data = await self.containers.read(r.container_id, r.exec_id, "stderr", r.len)
        return pb.ReadStreamResponse(data=data)

    async def WriteStdin(self, r: pb.WriteStreamRequest) -> pb.WriteStreamResponse:
        n = await self.containers.write_stdin(r.container_id, r.exec_id, r.data)
        return pb.WriteStreamResponse(len=n)

    async def CloseStdin(self, r: pb.CloseStdinRequest) -> pb.Empty:
        await self.containers.close_stdin(r.container_id, r.exec_id)
        return pb.Empty()

    async def TtyWinResize(self, r: pb.TtyWinResizeRequest) -> pb.Empty:
        self.containers.resize(r.container_id, r.exec_id, r.row, r.column)
        return pb.Empty()

    async def PauseContainer(self, r: pb.PauseContainerRequest) -> pb.Empty:
        await self.containers.pause(r.container_id)
        return pb.Empty()

    async def ResumeContainer(self, r: pb.ResumeContainerRequest) -> pb.Empty:
        await self.containers.resume(r.container_id)
        return pb.Empty()

    async def ListProcesses(self, r: pb.ListProcessesRequest) -> pb.ListProcessesResponse:
        return pb.ListProcessesResponse(pids=await self.containers.list_processes(
            r.container_id))

    async def StatsContainer(self, r: pb.StatsContainerRequest) -> pb.StatsContainerResponse:
        return pb.StatsContainerResponse(metrics=metrics(self.containers.stats(r.container_id)))

    async def UpdateContainer(self, r: pb.UpdateContainerRequest) -> pb.Empty:
        await self.containers.update(r.container_id, r.resources_json)
        return pb.Empty()

    async def GetGuestDetails(self, r: pb.GuestDetailsRequest) -> pb.GuestDetailsResponse:
        d = read_guest_details()
        return pb.GuestDetailsResponse(
            mem_block_size_bytes=d.mem_block_size_bytes,
            support_mem_hotplug_probe=d.support_mem_hotplug_probe and r.mem_hotplug_probe,
            kernel_release=d.kernel_release, online_cpus=d.online_cpus,
            mem_total_bytes=d.mem_total_bytes,
            agent_started_uptime=MARKS.get("started", 0.0),
            agent_serving_uptime=MARKS.get("serving", 0.0),
            agent_details=pb.AgentDetails(version=pykata.__version__,
                                          init_daemon=os.getpid() == 1,
                                          storage_handlers=["virtiofs"]))

    async def OnlineCPUMem(self, r: pb.OnlineCPUMemRequest) -> pb.OnlineCPUMemResponse:
        cpus, mem = await online_cpu_mem(r.cpus, r.mem_bytes, r.timeout_ms)
        return pb.OnlineCPUMemResponse(online_cpus=cpus, mem_total_bytes=mem)

    async def SetupNetwork(self, r: pb.SetupNetworkRequest) -> pb.Empty:
        from pykata.agent.network import setup_network
        from pykata.protocol.network import interfaces_of, routes_of

        # Netlink calls take microseconds, but the wait for a NIC may not block the loop.
        await asyncio.to_thread(setup_network, interfaces_of(r), routes_of(r), r.hostname,
                                r.resolv_conf)
        return pb.Empty()


    async def PortForwardOpen(self, r: pb.PortForwardOpenRequest) -> pb.PortForwardOpenResponse:
        return pb.PortForwardOpenResponse(stream_id=await self.forwards.open(r.port))

    async def PortForwardRead(self, r: pb.PortForwardReadRequest) -> pb.ReadStreamResponse:
        return pb.ReadStreamResponse(data=await self.forwards.read(r.stream_id, r.len))

    async def PortForwardWrite(self, r: pb.PortForwardWriteRequest) -> pb.WriteStreamResponse:
        return pb.WriteStreamResponse(len=await self.forwards.write(r.stream_id, r.data))

    async def PortForwardClose(self, r: pb.PortForwardCloseRequest) -> pb.Empty:
        await self.forwards.close(r.stream_id, r.write_only)
        return pb.Empty()

    async def ReseedRandomDev(self, r: pb.ReseedRandomDevRequest) -> pb.Empty:
        clone.reseed(r.data)
        return pb.Empty()

    async def SetGuestDateTime(self, r: pb.SetGuestDateTimeRequest) -> pb.Empty:
        clone.set_clock(r.sec, r.usec)
        return pb.Empty()

    async def GetMetrics(self, r: pb.GetMetricsRequest) -> pb.Metrics:
        return pb.Metrics(files=read_metrics_files())


async def _check(r: pb.CheckRequest) -> pb.HealthCheckResponse:
    return pb.HealthCheckResponse(status=pb.HealthCheckResponse.SERVING)


async def _version(r: pb.CheckRequest) -> pb.VersionCheckResponse:
    return pb.VersionCheckResponse(grpc_version="ttrpc", agent_version=pykata.__version__)


def build_services(handlers: AgentHandlers) -> Mapping[str, Mapping[str, Handler]]:
    agent = service_table(pb.DESCRIPTOR.services_by_name["AgentService"], pb, handlers,
                          rpc_error)
    health = {"Check": unary("Check", pb.CheckRequest, _check, rpc_error),
              "Version": unary("Version", pb.CheckRequest, _version, rpc_error)}
    return {AGENT_SERVICE: agent, HEALTH_SERVICE: health}
