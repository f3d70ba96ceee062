"""Typed calls to the guest agent over ttrpc. One method per agent RPC; no policy here."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import Message

from pykata.protocol.pb import agent_pb2 as pb
from pykata.protocol.ttrpc_aio import TtrpcClient

AGENT = "pykata.agent.v1.AgentService"
HEALTH = "pykata.agent.v1.Health"
READ_CHUNK = 1 << 20

M = TypeVar("M", bound=Message)


class AgentClient:
    def __init__(self, ttrpc: TtrpcClient) -> None:
        self.ttrpc = ttrpc

    async def _call(self, service: str, method: str, req: Message, resp: type[M],
                    timeout: float | None = None) -> M:
        data = await self.ttrpc.call(service, method, req.SerializeToString(), timeout)
        out = resp()
        out.ParseFromString(data)
        return out

    async def check(self, timeout: float | None = None) -> pb.HealthCheckResponse:
        return await self._call(HEALTH, "Check", pb.CheckRequest(), pb.HealthCheckResponse,
                                timeout)

    async def version(self) -> pb.VersionCheckResponse:
        return await self._call(HEALTH, "Version", pb.CheckRequest(), pb.VersionCheckResponse)

    async def create_sandbox(self, req: pb.CreateSandboxRequest) -> None:
        await self._call(AGENT, "CreateSandbox", req, pb.Empty)

    async def destroy_sandbox(self, timeout: float | None = None) -> None:
        await self._call(AGENT, "DestroySandbox", pb.DestroySandboxRequest(), pb.Empty, timeout)

    async def create_container(self, req: pb.CreateContainerRequest) -> None:
        await self._call(AGENT, "CreateContainer", req, pb.Empty)

    async def start_container(self, cid: str) -> None:
        await self._call(AGENT, "StartContainer", pb.StartContainerRequest(container_id=cid),
                         pb.Empty)

    async def remove_container(self, cid: str, timeout: int = 0) -> None:
        req = pb.RemoveContainerRequest(container_id=cid, timeout=timeout)
        await self._call(AGENT, "RemoveContainer", req, pb.Empty)

    async def exec_process(self, cid: str, exec_id: str, process_json: bytes) -> None:
        req = pb.ExecProcessRequest(container_id=cid, exec_id=exec_id, process_json=process_json)
        await self._call(AGENT, "ExecProcess", req, pb.Empty)

    async def signal_process(self, cid: str, exec_id: str, signal: int) -> None:
        req = pb.SignalProcessRequest(container_id=cid, exec_id=exec_id, signal=signal)
        await self._call(AGENT, "SignalProcess", req, pb.Empty)

    async def wait_process(self, cid: str, exec_id: str = "") -> int:
        req = pb.WaitProcessRequest(container_id=cid, exec_id=exec_id)
        return (await self._call(AGENT, "WaitProcess", req, pb.WaitProcessResponse)).status

    async def read_stdout(self, cid: str, exec_id: str = "") -> bytes:
        req = pb.ReadStreamRequest(container_id=cid, exec_id=exec_id, len=READ_CHUNK)
        return (await self._call(AGENT, "ReadStdout", req, pb.ReadStreamResponse)).data

    async def read_stderr(self, cid: str, exec_id: str = "") -> bytes:
        req = pb.ReadStreamRequest(container_id=cid, exec_id=exec_id, len=READ_CHUNK)
        return (await self._call(AGENT, "ReadStderr", req, pb.ReadStreamResponse)).data

    async def write_stdin(self, cid: str, exec_id: str, data: bytes) -> int:
        req = pb.WriteStreamRequest(container_id=cid, exec_id=exec_id, data=data)
        return (await self._call(AGENT, "WriteStdin", req, pb.WriteStreamResponse)).len

    async def close_stdin(self, cid: str, exec_id: str = "") -> None:
        req = pb.CloseStdinRequest(container_id=cid, exec_id=exec_id)
        await self._call(AGENT, "CloseStdin", req, pb.Empty)

    async def guest_details(self) -> pb.GuestDetailsResponse:
        req = pb.GuestDetailsRequest(mem_block_size=True, mem_hotplug_probe=True)
        return await self._call(AGENT, "GetGuestDetails", req, pb.GuestDetailsResponse)
