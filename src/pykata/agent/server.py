"""Wires the agent: reaper, OCI runtime, services, ttrpc server, and where it listens.

Two ways to run: `serve_guest` (PID 1 in the VM: virtio-serial port, plus vsock when
the guest has it; hot-plugged CPUs and memory onlined) and `serve_host` (a unix socket,
for tests and debugging on a host, where the agent makes itself a child subreaper so
container processes re-parent to it).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Mapping

from pykata.agent import linux
from pykata.agent.config import AgentConfig
from pykata.agent.console import log
from pykata.agent.containers import Containers
from pykata.agent.handlers import AgentHandlers, build_services
from pykata.agent.hotplug import start_onliner
from pykata.agent.reaper import Reaper
from pykata.agent.runtime import OciRuntime
from pykata.agent.sandbox import Sandbox
from pykata.agent.storage import GuestSystem, System
from pykata.agent.transport import serve_unix, serve_virtio_port, serve_vsock
from pykata.protocol.services import Handler


class Agent:
    def __init__(self, reaper: Reaper, runtime: OciRuntime, containers: Containers,
                 sandbox: Sandbox, services: Mapping[str, Mapping[str, Handler]]) -> None:
        self.reaper, self.runtime, self.containers = reaper, runtime, containers
        self.sandbox, self.services = sandbox, services

    async def shutdown(self) -> None:
        await self.sandbox.destroy()
        self.runtime.close()
        self.reaper.close()


def build_agent(config: AgentConfig, system: System) -> Agent:
    """Must run inside the event loop; installs the SIGCHLD reaper."""
    reaper = Reaper(asyncio.get_running_loop())
    reaper.install()
    os.makedirs(os.path.join(config.state_dir, "containers"), exist_ok=True)
    runtime = OciRuntime(config.oci_runtime, config.runtime_root, reaper)
    containers = Containers(config, reaper, runtime, system)
    sandbox = Sandbox(containers, system)
    services = build_services(AgentHandlers(sandbox, containers))
    return Agent(reaper, runtime, containers, sandbox, services)


async def serve_guest(config: AgentConfig) -> None:
    from pykata.transport.ttrpc_aio import TtrpcServer

    agent = build_agent(config, GuestSystem())
    uevents = start_onliner(asyncio.get_running_loop())  # kept open while serving
    serve = TtrpcServer(agent.services).serve
    listeners = [serve_virtio_port(serve, config.port_name)]
    if os.path.exists("/dev/vsock"):
        listeners.append(_optional(serve_vsock(serve, config.vsock_port), "vsock"))
    try:
        await asyncio.gather(*listeners)
    finally:
        if uevents is not None:
            uevents.close()


async def _optional(listener: Awaitable[None], what: str) -> None:
    try:
        await listener
    except OSError as exc:  # the virtio-serial port still serves
        log(f"not serving on {what}: {exc}")


async def serve_host(config: AgentConfig, socket_path: str) -> None:
    """Serves on a unix socket until SIGTERM/SIGINT, then removes every container."""
    from pykata.transport.ttrpc_aio import TtrpcServer

    linux.set_child_subreaper(True)
    agent = build_agent(config, _HostSystem())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    listener = asyncio.create_task(serve_unix(TtrpcServer(agent.services).serve, socket_path))
    stopping = asyncio.create_task(stop.wait())
    log(f"serving on unix:{socket_path}")
    try:
        await asyncio.wait([listener, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (listener, stopping):
            task.cancel()
        await asyncio.wait([listener, stopping])
        await agent.shutdown()
        linux.set_child_subreaper(False)
    if not listener.cancelled():
        listener.result()  # re-raises why the listener died


class _HostSystem:
    """On a host the agent must not mount or rename anything: refuse clearly."""

    def mount(self, plan: object) -> None:
        raise OSError(1, f"host mode: not mounting {plan}")

    def unmount(self, target: str) -> None:
        raise OSError(1, f"host mode: not unmounting {target}")

    def set_hostname(self, name: str) -> None:
        raise OSError(1, f"host mode: not setting the hostname to {name!r}")
