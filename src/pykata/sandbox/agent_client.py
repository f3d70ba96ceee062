"""Typed calls to the guest agent over ttrpc. One method per agent RPC.

The guest is not trusted: every reply is decoded here and checked before use, and every
call has a deadline except the long polls (ReadStdout/ReadStderr/WaitProcess), whose
answer legitimately waits on the container. A dead VM ends those with the connection.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from pykata.domain.errors import ProtocolError
from pykata.protocol.pb import agent_pb2 as pb
from pykata.transport.ttrpc_aio import TtrpcClient

AGENT = "pykata.agent.v1.AgentService"
HEALTH = "pykata.agent.v1.Health"
READ_CHUNK = 1 << 20
DEFAULT_CALL_TIMEOUT = 30.0
# A signal is delivered at once (or by one `crun kill --all`): longer means the guest hangs.
SIGNAL_TIMEOUT = 10.0
# Linux's PID_MAX_LIMIT: a pid above it is not a pid.
MAX_PID = 1 << 22
# x86's NR_CPUS ceiling (CONFIG_MAXSMP): a guest reporting more CPUs is lying.
MAX_GUEST_CPUS = 8192

M = TypeVar("M", bound=Message)


class AgentClient:
    def __init__(self, ttrpc: TtrpcClient, call_timeout: float = DEFAULT_CALL_TIMEOUT,
                 create_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self.ttrpc = ttrpc
        self.call_timeout = call_timeout
        self.create_timeout = create_timeout

    async def close(self) -> None:
        await self.ttrpc.close()

    async def _call(self, service: str, method: str, req: Message, resp: type[M],
                    timeout: float | None) -> M:
        data = await self.ttrpc.call(service, method, req.SerializeToString(), timeout)
        out = resp()
        try:
            out.ParseFromString(data)
        except (DecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"agent {method}: malformed {resp.__name__}: {exc}") from exc
        return out

    async def _unary(self, method: str, req: Message, resp: type[M],
                     timeout: float | None = None) -> M:
        return await self._call(AGENT, method, req, resp, timeout or self.call_timeout)

    async def check(self) -> pb.HealthCheckResponse:
        # No deadline of its own: the caller bounds the wait for the guest to boot.
        return await self._call(HEALTH, "Check", pb.CheckRequest(), pb.HealthCheckResponse,
                                None)

    async def version(self) -> pb.VersionCheckResponse:
        return await self._call(HEALTH, "Version", pb.CheckRequest(), pb.VersionCheckResponse,
                                self.call_timeout)

    async def create_sandbox(self, req: pb.CreateSandboxRequest) -> None:
        await self._unary("CreateSandbox", req, pb.Empty)

    async def setup_network(self, req: pb.SetupNetworkRequest) -> None:
        await self._unary("SetupNetwork", req, pb.Empty)

    async def destroy_sandbox(self, timeout: float | None = None) -> None:
        await self._unary("DestroySandbox", pb.DestroySandboxRequest(), pb.Empty, timeout)

    async def create_container(self, req: pb.CreateContainerRequest) -> None:
        await self._unary("CreateContainer", req, pb.Empty, self.create_timeout)

    async def start_container(self, cid: str) -> None:
        await self._unary("StartContainer", pb.StartContainerRequest(container_id=cid),
                          pb.Empty, self.create_timeout)

    async def remove_container(self, cid: str, timeout: int = 0) -> None:
        req = pb.RemoveContainerRequest(container_id=cid, timeout=timeout)
        await self._unary("RemoveContainer", req, pb.Empty, self.call_timeout + timeout)

    async def exec_process(self, cid: str, exec_id: str, process_json: bytes) -> None:
        req = pb.ExecProcessRequest(container_id=cid, exec_id=exec_id, process_json=process_json)
        await self._unary("ExecProcess", req, pb.Empty, self.create_timeout)

    async def remove_process(self, cid: str, exec_id: str) -> None:
        req = pb.RemoveProcessRequest(container_id=cid, exec_id=exec_id)
        await self._unary("RemoveProcess", req, pb.Empty)

    async def signal_process(self, cid: str, exec_id: str, signal: int,
                             all: bool = False) -> None:
        """With `all`, every process of the container gets the signal."""
        req = pb.SignalProcessRequest(container_id=cid, exec_id=exec_id, signal=signal, all=all)
        await self._unary("SignalProcess", req, pb.Empty, SIGNAL_TIMEOUT)

    async def wait_process(self, cid: str, exec_id: str = "") -> int:
        return (await self.wait_exit(cid, exec_id))[0]

    async def wait_exit(self, cid: str, exec_id: str = "") -> tuple[int, bool]:
        """The exit status, and for a container's init whether the OOM killer struck."""
        req = pb.WaitProcessRequest(container_id=cid, exec_id=exec_id)
        resp = await self._call(AGENT, "WaitProcess", req, pb.WaitProcessResponse, None)
        if not 0 <= resp.status <= 255:  # 128+signal at most; anything else hides the truth
            raise ProtocolError(f"agent WaitProcess: exit status {resp.status} out of range "
                                "0-255")
        return resp.status, resp.oom_killed

    async def read_stdout(self, cid: str, exec_id: str = "") -> bytes:
        req = pb.ReadStreamRequest(container_id=cid, exec_id=exec_id, len=READ_CHUNK)
        return await self._read("ReadStdout", req)

    async def read_stderr(self, cid: str, exec_id: str = "") -> bytes:
        req = pb.ReadStreamRequest(container_id=cid, exec_id=exec_id, len=READ_CHUNK)
        return await self._read("ReadStderr", req)

    async def _read(self, method: str, req: pb.ReadStreamRequest) -> bytes:
        data = (await self._call(AGENT, method, req, pb.ReadStreamResponse, None)).data
        if len(data) > req.len:
            raise ProtocolError(f"agent {method}: {len(data)} bytes, asked for {req.len}")
        return data

    async def write_stdin(self, cid: str, exec_id: str, data: bytes) -> int:
        req = pb.WriteStreamRequest(container_id=cid, exec_id=exec_id, data=data)
        n = (await self._unary("WriteStdin", req, pb.WriteStreamResponse)).len
        if not 0 < n <= len(data):  # 0 would loop forever; more is a lie
            raise ProtocolError(f"agent WriteStdin: wrote {n} of {len(data)} bytes")
        return n

    async def close_stdin(self, cid: str, exec_id: str = "") -> None:
        req = pb.CloseStdinRequest(container_id=cid, exec_id=exec_id)
        await self._unary("CloseStdin", req, pb.Empty)

    async def tty_win_resize(self, cid: str, exec_id: str, rows: int, cols: int) -> None:
        """A no-op for a process without a terminal."""
        req = pb.TtyWinResizeRequest(container_id=cid, exec_id=exec_id, row=rows, column=cols)
        await self._unary("TtyWinResize", req, pb.Empty)

    async def pause_container(self, cid: str) -> None:
        await self._unary("PauseContainer", pb.PauseContainerRequest(container_id=cid), pb.Empty)

    async def resume_container(self, cid: str) -> None:
        await self._unary("ResumeContainer", pb.ResumeContainerRequest(container_id=cid),
                          pb.Empty)

    async def list_processes(self, cid: str) -> list[int]:
        """The container's pids, in the guest's pid namespace."""
        req = pb.ListProcessesRequest(container_id=cid)
        pids = list((await self._unary("ListProcesses", req, pb.ListProcessesResponse)).pids)
        bad = [p for p in pids if not 0 < p <= MAX_PID]
        if bad:
            raise ProtocolError(f"agent ListProcesses: {bad[0]} is not a pid")
        return pids

    async def stats_container(self, cid: str) -> pb.StatsContainerResponse:
        """`metrics` encodes as containerd's io.containerd.cgroups.v2.Metrics."""
        req = pb.StatsContainerRequest(container_id=cid)
        resp = await self._unary("StatsContainer", req, pb.StatsContainerResponse)
        if not resp.HasField("metrics"):
            raise ProtocolError("agent StatsContainer: no metrics")
        return resp

    async def update_container(self, cid: str, resources_json: bytes) -> None:
        """`resources_json`: an OCI LinuxResources document."""
        req = pb.UpdateContainerRequest(container_id=cid, resources_json=resources_json)
        await self._unary("UpdateContainer", req, pb.Empty)

    async def reseed_random(self, data: bytes) -> None:
        await self._unary("ReseedRandomDev", pb.ReseedRandomDevRequest(data=data), pb.Empty)

    async def set_guest_time(self, seconds: float) -> None:
        sec = int(seconds)
        req = pb.SetGuestDateTimeRequest(sec=sec, usec=int((seconds - sec) * 1e6))
        await self._unary("SetGuestDateTime", req, pb.Empty)

    async def metrics_files(self) -> dict[str, str]:
        """The guest's /proc files `pykata monitor` parses (name -> text)."""
        return dict((await self._unary("GetMetrics", pb.GetMetricsRequest(), pb.Metrics)).files)

    async def guest_details(self) -> pb.GuestDetailsResponse:
        req = pb.GuestDetailsRequest(mem_block_size=True, mem_hotplug_probe=True)
        return await self._unary("GetGuestDetails", req, pb.GuestDetailsResponse)

    async def online_cpu_mem(self, cpus: int, mem_bytes: int,
                             timeout: float) -> pb.OnlineCPUMemResponse:
        """Has the guest online what was hot-plugged and wait, at most `timeout` s, until it
        sees `cpus` CPUs and a MemTotal of `mem_bytes` (see agent.proto); returns what it
        sees then, met or not."""
        req = pb.OnlineCPUMemRequest(cpus=cpus, mem_bytes=mem_bytes,
                                     timeout_ms=max(1, round(timeout * 1000)))
        resp = await self._unary("OnlineCPUMem", req, pb.OnlineCPUMemResponse,
                                 timeout + self.call_timeout)
        if not 0 < resp.online_cpus <= MAX_GUEST_CPUS:
            raise ProtocolError(f"agent OnlineCPUMem: {resp.online_cpus} online CPUs")
        if resp.mem_total_bytes == 0:
            raise ProtocolError("agent OnlineCPUMem: MemTotal 0")
        return resp

    async def port_forward_open(self, port: int) -> int:
        """A stream to localhost:`port` in the VM's network namespace; its id."""
        resp = await self._unary("PortForwardOpen", pb.PortForwardOpenRequest(port=port),
                                 pb.PortForwardOpenResponse)
        if resp.stream_id == 0:
            raise ProtocolError("agent PortForwardOpen: stream id 0")
        return resp.stream_id

    async def port_forward_read(self, stream_id: int) -> bytes:
        """Waits for data; empty at the end of the stream."""
        req = pb.PortForwardReadRequest(stream_id=stream_id, len=READ_CHUNK)
        data = (await self._call(AGENT, "PortForwardRead", req, pb.ReadStreamResponse,
                                 None)).data
        if len(data) > req.len:
            raise ProtocolError(f"agent PortForwardRead: {len(data)} bytes, asked for {req.len}")
        return data

    async def port_forward_write(self, stream_id: int, data: bytes) -> int:
        req = pb.PortForwardWriteRequest(stream_id=stream_id, data=data)
        n = (await self._unary("PortForwardWrite", req, pb.WriteStreamResponse)).len
        if not 0 < n <= len(data):
            raise ProtocolError(f"agent PortForwardWrite: wrote {n} of {len(data)} bytes")
        return n

    async def port_forward_close(self, stream_id: int, write_only: bool = False) -> None:
        req = pb.PortForwardCloseRequest(stream_id=stream_id, write_only=write_only)
        await self._unary("PortForwardClose", req, pb.Empty)
