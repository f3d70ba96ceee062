"""The agent as a process (`python -m pykata.agent.main --listen SOCK`, host mode) spoken to
over ttrpc by TtrpcClient: the wire names, a container run, calls in flight together, and
a clean shutdown on SIGTERM that leaves no container behind."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from google.protobuf.message import Message
from test_agent_service import container_spec, find_runtime, make_rootfs

from pykata.agent.handlers import AGENT_SERVICE, HEALTH_SERVICE
from pykata.domain import errors
from pykata.domain.errors import RpcError
from pykata.protocol.pb import agent_pb2 as pb
from pykata.transport.ttrpc_aio import TtrpcClient

M = TypeVar("M", bound=Message)


@pytest.fixture
def agent_socket(tmp_path: Path) -> Iterator[str]:
    runtime, why = find_runtime()
    if runtime is None:
        pytest.skip(f"no OCI runtime can run containers here: {why}")
    sock = str(tmp_path / "agent.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pykata.agent.main", "--listen", sock, "--runtime", runtime,
         "--runtime-root", str(tmp_path / "rt"), "--state-dir", str(tmp_path / "state"),
         "--shared-root", str(tmp_path / "shared")],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "agent did not listen within 10 s"
            time.sleep(0.02)
        yield sock
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == 0, stderr
        # SIGTERM removed what was left: the runtime knows no container.
        assert os.listdir(tmp_path / "rt") == [], stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Wire:
    """Encodes requests and decodes responses around TtrpcClient.call."""

    def __init__(self, client: TtrpcClient) -> None:
        self.client = client

    async def __call__(self, method: str, request: Message, out: type[M]) -> M:
        service = HEALTH_SERVICE if method == "Check" else AGENT_SERVICE
        return out.FromString(await self.client.call(service, method,
                                                     request.SerializeToString()))


def test_agent_over_ttrpc(agent_socket: str, tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path / "shared" / "c1" / "rootfs")
    spec = json.dumps(container_spec("rootfs", "sh", "-c", "cat; exit 2")).encode()

    async def main() -> None:
        call = Wire(await TtrpcClient.connect_unix(agent_socket))
        try:
            check = await call("Check", pb.CheckRequest(), pb.HealthCheckResponse)
            assert check.status == pb.HealthCheckResponse.SERVING
            await call("CreateContainer", pb.CreateContainerRequest(
                container_id="c1", oci_spec_json=spec), pb.Empty)
            await call("StartContainer", pb.StartContainerRequest(container_id="c1"), pb.Empty)
            read = asyncio.ensure_future(call("ReadStdout", pb.ReadStreamRequest(
                container_id="c1", len=100), pb.ReadStreamResponse))
            wait = asyncio.ensure_future(call("WaitProcess", pb.WaitProcessRequest(
                container_id="c1"), pb.WaitProcessResponse))
            # Both long polls are on the wire; the write still goes through.
            await call("WriteStdin", pb.WriteStreamRequest(container_id="c1", data=b"ping"),
                       pb.WriteStreamResponse)
            assert (await read).data == b"ping"
            await call("CloseStdin", pb.CloseStdinRequest(container_id="c1"), pb.Empty)
            assert (await wait).status == 2
            with pytest.raises(RpcError) as info:
                await call("StartContainer", pb.StartContainerRequest(container_id="zz"),
                           pb.Empty)
            assert info.value.code == errors.NOT_FOUND and "'zz'" in info.value.message
            # Left running on purpose: SIGTERM to the agent must clean it up.
            await call("CreateContainer", pb.CreateContainerRequest(
                container_id="c2", oci_spec_json=json.dumps(container_spec(
                    str(rootfs), "sleep", "100")).encode()), pb.Empty)
        finally:
            await call.client.close()

    asyncio.run(main())
