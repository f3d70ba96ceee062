"""The shim daemon: serves the Task service on its socket until Shutdown, then tears the
sandbox down and exits.

Its log goes to containerd's `log` FIFO in the bundle (containerd copies it to its own
log), at debug level when containerd passed `-debug`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Mapping

from pykata.domain.errors import (
    ALREADY_EXISTS,
    FAILED_PRECONDITION,
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNAVAILABLE,
    UNKNOWN,
    AnnotationError,
    BadValue,
    CgroupError,
    ConfigError,
    CpuSetError,
    DuplicateId,
    HostError,
    HotplugError,
    IdError,
    ImageError,
    NetworkError,
    NumaError,
    ProtocolError,
    PykataError,
    RpcError,
    SpecError,
    StateError,
    StdioError,
    TopologyError,
    UnknownId,
    VmmError,
)
from pykata.protocol.pb import shim_pb2
from pykata.protocol.services import Handler, service_table
from pykata.sandbox.owner_stats import OwnerStats
from pykata.shim.args import ShimArgs, pod_role
from pykata.shim.boot import boot_sandbox
from pykata.shim.bundle import BootRequest, read_spec
from pykata.shim.events import Publisher
from pykata.shim.service import TaskService
from pykata.transport.ttrpc_aio import TtrpcServer

log = logging.getLogger("pykata.shim")

TASK_SERVICE = "containerd.task.v2.Task"

# The one conversion of pykata's errors to containerd's codes: what the caller sent is
# wrong (InvalidArgument), asks for what this host or sandbox cannot do now
# (FailedPrecondition), names what does not exist (NotFound), or the VM or host failed
# (Unavailable, Internal). First match wins: subclasses before their bases.
_CODES: tuple[tuple[type[Exception], int], ...] = (
    (IdError, INVALID_ARGUMENT),
    (BadValue, INVALID_ARGUMENT),
    (UnknownId, NOT_FOUND),
    (DuplicateId, ALREADY_EXISTS),
    (SpecError, INVALID_ARGUMENT),
    (ConfigError, INVALID_ARGUMENT),
    (AnnotationError, INVALID_ARGUMENT),
    (CgroupError, INVALID_ARGUMENT),
    (CpuSetError, INVALID_ARGUMENT),
    (NetworkError, INVALID_ARGUMENT),
    (StdioError, INVALID_ARGUMENT),
    (StateError, FAILED_PRECONDITION),
    (NumaError, FAILED_PRECONDITION),
    (HotplugError, FAILED_PRECONDITION),
    (ImageError, FAILED_PRECONDITION),
    (FileNotFoundError, NOT_FOUND),
    (FileExistsError, ALREADY_EXISTS),
    (VmmError, UNAVAILABLE),
    (ProtocolError, UNAVAILABLE),
    (TopologyError, INTERNAL),
    (HostError, INTERNAL),
    (OSError, INTERNAL),
)


def to_rpc_error(method: str, exc: Exception) -> RpcError:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return RpcError(method, code, str(exc))
    log.error("%s failed: %s", method, exc)
    return RpcError(method, UNKNOWN, str(exc))


def task_services(service: TaskService,
                  stats: OwnerStats | None = None) -> Mapping[str, Mapping[str, Handler]]:
    """The Task service's table; with `stats`, each call's time goes there by method."""
    table = service_table(shim_pb2.DESCRIPTOR.services_by_name["Task"], shim_pb2, service,
                          to_rpc_error)
    if stats is not None:
        table = {name: _timed(name, handler, stats) for name, handler in table.items()}
    return {TASK_SERVICE: table}


def _timed(method: str, handler: Handler, stats: OwnerStats) -> Handler:
    async def handle(payload: bytes) -> bytes:
        started = time.monotonic()
        try:
            return await handler(payload)
        finally:
            stats.answered(method, (time.monotonic() - started) * 1000)
    return handle


class _LogfmtFormatter(logging.Formatter):
    """containerd's own style (logrus text), so its log reads as one."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage().replace('"', '\\"').replace("\n", "\\n")
        return (f'time="{ts}.{int(record.msecs):03d}Z" level={record.levelname.lower()} '
                f'msg="{msg}" runtime=io.containerd.pykata.v2 pid={os.getpid()}')


def setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler()  # stderr: the log FIFO (see bootstrap.daemonize)
    handler.setFormatter(_LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("asyncio").setLevel(logging.WARNING)


def serve(args: ShimArgs, sock: socket.socket, config_path: str) -> int:
    setup_logging(args.debug)
    log.info("serving %s (namespace %s) on %s", args.id, args.namespace, sock.getsockname())
    try:
        asyncio.run(_serve(args, sock, config_path))
    except PykataError as exc:
        log.error("shim failed: %s", exc)
        return 1
    return 0


def _early_boot_request(args: ShimArgs, config_path: str) -> BootRequest | None:
    """The sandbox task's boot request from its bundle (the shim's cwd), if it reads."""
    try:
        spec = read_spec(os.getcwd())
        role = pod_role(args.id, spec.doc.get("annotations") or {})
    except PykataError as exc:
        log.debug("no early boot: %s", exc)
        return None
    return BootRequest(args.id, spec, role, config_path) if role.is_sandbox else None


async def _serve(args: ShimArgs, sock: socket.socket, config_path: str) -> None:
    events = Publisher(os.environ.get("TTRPC_ADDRESS", ""), args.namespace)
    stats = OwnerStats()  # this shim's sandbox's, with the RPC times
    service = TaskService(args.namespace, events, functools.partial(boot_sandbox, stats=stats),
                          config_path)
    early = _early_boot_request(args, config_path)
    if early is not None:
        service.boot_early(early)
    services = task_services(service, stats)
    connections: set[asyncio.Task[None]] = set()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await TtrpcServer(services).serve(reader, writer)
        except PykataError as exc:
            log.warning("connection ended: %s", exc)
        finally:
            connections.discard(task)

    server = await asyncio.start_unix_server(connection, sock=sock)
    path = sock.getsockname()
    try:
        await service.shutdown_requested.wait()
        await asyncio.sleep(0.05)  # let the Shutdown reply go out
    finally:
        # The sandbox goes while the socket still answers: `delete`, which containerd runs
        # as soon as it hangs up, clears a sandbox itself when nobody answers there.
        try:
            await service.close()
        finally:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            await events.close()
            for task in list(connections):
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
    log.info("shim for %s exits", args.id)
