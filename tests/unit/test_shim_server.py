"""The shim's handler table: bytes in, bytes out, and exceptions mapped to containerd's codes."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Coroutine
from typing import Any

import pytest
from google.protobuf import empty_pb2

from pykata.domain.errors import (
    ALREADY_EXISTS,
    FAILED_PRECONDITION,
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNAVAILABLE,
    UNIMPLEMENTED,
    UNKNOWN,
    AnnotationError,
    CgroupError,
    ConfigError,
    IdError,
    NumaError,
    PykataError,
    RpcError,
    SpecError,
    StateError,
    StdioError,
    VmmError,
)
from pykata.protocol.pb import shim_pb2 as pb
from pykata.sandbox.sandbox import Sandbox
from pykata.shim.bundle import BootRequest
from pykata.shim.events import Publisher
from pykata.shim.server import TASK_SERVICE, task_services, to_rpc_error
from pykata.shim.service import TaskService

TASK_METHODS = {"State", "Create", "Start", "Delete", "Pids", "Pause", "Resume", "Checkpoint",
                "Kill", "Exec", "ResizePty", "CloseIO", "Update", "Wait", "Stats", "Connect",
                "Shutdown"}


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 5))


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        pytest.param(IdError("task id", "../x", "bad"), INVALID_ARGUMENT, id="id"),
        pytest.param(SpecError("config.json", "process.args", "empty"), INVALID_ARGUMENT,
                     id="spec"),
        pytest.param(ConfigError("pykata.toml", "vcpus", 0, "too few"), INVALID_ARGUMENT,
                     id="config"),
        pytest.param(StateError("agent call", "stopped", "running"), FAILED_PRECONDITION,
                     id="state"),
        pytest.param(FileNotFoundError(errno.ENOENT, "No such file", "/b/config.json"),
                     NOT_FOUND, id="file-not-found"),
        pytest.param(FileExistsError(errno.EEXIST, "File exists", "/s"), ALREADY_EXISTS,
                     id="file-exists"),
        pytest.param(StdioError("stdio /x: not a FIFO"), INVALID_ARGUMENT, id="stdio"),
        pytest.param(AnnotationError([("io.katacontainers.config.hypervisor.path", "/x",
                                       "not enabled")]), INVALID_ARGUMENT, id="annotation"),
        pytest.param(CgroupError("cgroupsPath", "/..", "must not contain '..'"),
                     INVALID_ARGUMENT, id="cgroup"),
        pytest.param(NumaError("numa_mapping entry", "7", "host has nodes 0-1"),
                     FAILED_PRECONDITION, id="numa"),
        pytest.param(VmmError("QEMU exited"), UNAVAILABLE, id="vmm"),
        pytest.param(PermissionError(errno.EACCES, "Permission denied"), INTERNAL,
                     id="other-os-error"),
        pytest.param(PykataError("something else"), UNKNOWN, id="other-pykata-error"),
    ],
)
def test_to_rpc_error(exc: Exception, code: int) -> None:
    err = to_rpc_error("Create", exc)
    assert (err.method, err.code, err.message) == ("Create", code, str(exc))


async def _no_boot(req: BootRequest) -> Sandbox:
    raise AssertionError(f"boot {req.task_id}: no task may boot here")


def _table() -> dict[str, Any]:
    service = TaskService("default", Publisher("", "default"), _no_boot)
    services = task_services(service)
    assert set(services) == {TASK_SERVICE}
    return dict(services[TASK_SERVICE])


def test_every_task_method_is_served() -> None:
    assert set(_table()) == TASK_METHODS


@pytest.mark.parametrize(
    ("method", "payload", "code", "message"),
    [
        pytest.param("Kill", pb.KillRequest(id="c1", signal=9).SerializeToString(),
                     NOT_FOUND, "no task 'c1'", id="unknown-task"),
        pytest.param("State", b"\xff\xff", INVALID_ARGUMENT, "undecodable StateRequest",
                     id="undecodable"),
        pytest.param("Checkpoint", pb.CheckpointTaskRequest(id="c1").SerializeToString(),
                     UNIMPLEMENTED, "checkpoint", id="checkpoint"),
        # An IdError leaves the service as it is and is mapped at the boundary.
        pytest.param("Create", pb.CreateTaskRequest(id="../c1").SerializeToString(),
                     INVALID_ARGUMENT, "task id '../c1'", id="bad-id-mapped"),
    ],
)
def test_handler_errors(method: str, payload: bytes, code: int, message: str) -> None:
    async def body() -> None:
        with pytest.raises(RpcError) as caught:
            await _table()[method](payload)
        assert caught.value.code == code
        assert message in caught.value.message
    run(body())


def test_handler_encodes_the_reply() -> None:
    async def body() -> None:
        table = _table()
        reply = await table["Connect"](pb.ConnectRequest(id="c1").SerializeToString())
        resp = pb.ConnectResponse.FromString(reply)
        assert resp.shim_pid > 0 and resp.version.startswith("pykata ")
        reply = await table["Shutdown"](pb.ShutdownRequest(id="c1").SerializeToString())
        assert empty_pb2.Empty.FromString(reply) == empty_pb2.Empty()
    run(body())


def test_unexpected_errors_are_unknown_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    err = to_rpc_error("Start", PykataError("the agent said no"))
    assert err.code == UNKNOWN
    assert "Start failed: the agent said no" in caplog.text
