"""One running VM: virtiofsd + QEMU, started together, stopped by pid.

Sockets are created here before the processes start and passed to them as inherited fds,
so nothing polls for a socket file to appear: a connect waits in the listen backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from pykata.domain.errors import VmmError
from pykata.plan.qemu import QemuOption
from pykata.plan.vm import VmPlan, plan_qemu_argv
from pykata.vmm import processes

log = logging.getLogger(__name__)

# qemu.qmp logs every connection step at INFO/DEBUG; pykata's own log says what matters.
logging.getLogger("qemu.qmp").setLevel(logging.WARNING)

INSPECT_SOCKET = "inspect.sock"  # a second QMP monitor, for `pykata inspect`


@dataclass
class Vm:
    plan: VmPlan
    state_dir: str
    qemu: asyncio.subprocess.Process
    virtiofsd: asyncio.subprocess.Process
    qmp_sock: socket.socket
    agent_sock: socket.socket | None
    qmp: QMPClient = field(default_factory=lambda: QMPClient("pykata"))

    @property
    def qemu_log(self) -> str:
        return f"{self.state_dir}/qemu.log"

    def failure_detail(self) -> str:
        """What QEMU and the guest said last, for error messages."""
        parts = [f"qemu: {processes.log_tail(self.qemu_log)}",
                 f"console: {processes.log_tail(self.plan.console_log)}"]
        return "\n".join(p for p in parts if not p.endswith(": "))

    async def connect_qmp(self) -> None:
        try:
            await self.qmp.connect(self.qmp_sock)
        except (QMPError, OSError) as exc:
            raise VmmError(f"QMP connect failed: {exc}\n{self.failure_detail()}") from exc

    async def shutdown(self, grace: float = 3.0) -> None:
        """Quit QEMU (QMP, then SIGKILL), then virtiofsd, which exits once QEMU is gone."""
        if self.qemu.returncode is None and self.qmp.runstate.name == "RUNNING":
            with contextlib.suppress(QMPError, OSError, EOFError, TimeoutError):
                await asyncio.wait_for(self.qmp.execute("quit"), grace)
        with contextlib.suppress(QMPError, OSError, EOFError):
            await self.qmp.disconnect()
        await processes.stop(self.qemu, grace)
        await processes.stop(self.virtiofsd, grace)
        for sock in (self.qmp_sock, self.agent_sock):
            if sock is not None:
                sock.close()
        for path in socket_paths(self.plan, self.state_dir):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # another VM may start in this state dir (a clone's fallback)


def socket_paths(plan: VmPlan, state_dir: str) -> list[str]:
    """The sockets `launch` binds: virtiofsd's, QMP's, inspect's, and the agent's."""
    return [plan.virtiofs_socket, f"{state_dir}/qmp.sock", f"{state_dir}/{INSPECT_SOCKET}",
            *([f"{state_dir}/agent.sock"] if plan.transport == "virtio-serial" else [])]


def virtiofsd_argv(daemon: str, fd: int, source: str, cache: str) -> list[str]:
    return [daemon, f"--fd={fd}", "-o", f"source={source}", "-o", f"cache={cache}",
            "--thread-pool-size=1"]


async def launch(plan: VmPlan, state_dir: str, shared_dir: str, fs_daemon: str,
                 fs_cache: str, devices: Sequence[QemuOption] = (),
                 device_fds: Sequence[int] = (), ram_fd: int | None = None) -> Vm:
    """Start virtiofsd and QEMU; the caller owns the Vm and must `shutdown()` it.
    `devices` are extra QEMU options on the inherited `device_fds` (network taps);
    `ram_fd`: a template's or clone's guest RAM (a memfd QEMU inherits)."""
    listeners = [processes.listen_unix(path) for path in socket_paths(plan, state_dir)]
    fs_listener, qmp_listener, inspect_listener, *agent = listeners
    agent_listener = agent[0] if agent else None
    try:
        virtiofsd = await processes.spawn(
            virtiofsd_argv(fs_daemon, fs_listener.fileno(), shared_dir, fs_cache),
            f"{state_dir}/virtiofsd.log", [fs_listener.fileno()])
        argv = plan_qemu_argv(plan, qmp_listener.fileno(),
                              agent_listener.fileno() if agent_listener else None,
                              inspect_listener.fileno(), devices, ram_fd)
        log.debug("qemu argv: %s", argv)
        try:
            qemu = await processes.spawn(argv, f"{state_dir}/qemu.log",
                                         [*(s.fileno() for s in listeners[1:]),
                                          *device_fds,
                                          *([ram_fd] if ram_fd is not None else [])])
        except BaseException:
            await processes.stop(virtiofsd, 0)
            raise
        qmp_sock = processes.connect_unix(f"{state_dir}/qmp.sock")
        agent_sock = (processes.connect_unix(f"{state_dir}/agent.sock")
                      if agent_listener else None)
    finally:
        for sock in listeners:
            sock.close()
    return Vm(plan, state_dir, qemu, virtiofsd, qmp_sock, agent_sock)


async def dial_vsock(cid: int, port: int, interval: float = 0.02
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the agent over vsock, retrying until it listens (the caller bounds the
    wait). Unlike virtio-serial, a vsock connect is refused until the guest is serving."""
    loop = asyncio.get_running_loop()
    while True:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (cid, port))
        except (ConnectionResetError, ConnectionRefusedError, TimeoutError):
            sock.close()
            await asyncio.sleep(interval)
            continue
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)
