"""The seam between a sandbox's lifecycle and the world: what `Sandbox` does to the host
(directories, mounts, cgroups, the pod's network, port-forward), to the VMM (launch QEMU and
virtiofsd, read vCPU threads) and how it reaches the agent, as one small interface.

`RealEffects` carries each call out with `pykata.host` and `pykata.vmm`; the unit tests
use in-memory fakes (`tests/unit/sandbox_fakes.py`), so the lifecycle (start, a failure at
each step unwinding what was done, resize, teardown) runs without QEMU in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from pykata.domain.config import Config
from pykata.domain.contract import AGENT_VSOCK_PORT
from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import SpecError
from pykata.host import mounts
from pykata.host.cgroups import SandboxCgroups
from pykata.host.vfio import check_vfio_ready
from pykata.plan.network import NetworkPlan, NetworkRequest
from pykata.plan.qemu import QemuOption
from pykata.plan.sandbox import SandboxPlan
from pykata.plan.template import TemplatePlan
from pykata.protocol.pb import agent_pb2 as pb
from pykata.sandbox import factory
from pykata.sandbox.agent_client import AgentClient
from pykata.sandbox.leftovers import record_owner
from pykata.sandbox.metrics_server import serve_metrics
from pykata.sandbox.network import attach_network
from pykata.sandbox.portforward import PortForwarder
from pykata.transport.ttrpc_aio import TtrpcClient
from pykata.vmm import clone
from pykata.vmm import vm as vmm
from pykata.vmm.threads import vcpu_threads


class Process(Protocol):
    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class VmHandle(Protocol):
    """A launched VM: QEMU and virtiofsd, and QMP."""

    @property
    def qemu(self) -> Process: ...

    @property
    def virtiofsd(self) -> Process: ...

    @property
    def qmp(self) -> Any: ...  # qemu.qmp's QMPClient (execute); a fake in tests

    async def connect_qmp(self) -> None: ...

    async def shutdown(self) -> None: ...

    def failure_detail(self) -> str: ...


class Cgroups(Protocol):
    def create(self, qemu_pid: int, other_pids: Sequence[int]) -> None: ...

    def update(self, cpuset: CpuSet | None, mems: CpuSet | None, vcpus: float) -> None: ...

    def place_vcpus(self, tids: Iterable[int]) -> None: ...

    def remove(self) -> list[str]: ...


class Network(Protocol):
    """The pod's network attached on the host: taps whose fds go to QEMU."""

    def qemu(self, bus: str) -> tuple[list[QemuOption], list[int]]: ...

    def close_fds(self) -> None: ...

    def request(self, req: NetworkRequest) -> pb.SetupNetworkRequest: ...


class Ram(Protocol):
    """A clone's RAM: a memfd QEMU inherits, filled (`start`) while QEMU starts."""

    @property
    def fd(self) -> int: ...

    def start(self) -> None: ...

    async def finish(self) -> None: ...


class Effects(Protocol):
    def make_state_dir(self, state_dir: str) -> None: ...

    def remove_dir(self, path: str) -> None: ...

    def share_dir(self, path: str) -> None: ...

    def bind(self, source: str, target: str, readonly: bool) -> None: ...

    def unmount(self, target: str) -> None: ...

    def check_vfio(self, bdfs: Sequence[str]) -> None: ...

    def cgroups(self, plan: SandboxPlan, record: str) -> Cgroups: ...

    async def attach_network(self, stack: contextlib.AsyncExitStack, plan: NetworkPlan,
                             state_dir: str) -> Network: ...

    async def launch(self, plan: SandboxPlan, shared_dir: str, devices: Sequence[QemuOption],
                     fds: Sequence[int], ram: int | None = None) -> VmHandle: ...

    async def clone_ram(self, stack: contextlib.AsyncExitStack, template: TemplatePlan,
                        cfg: Config, state_dir: str) -> Ram: ...

    async def restore(self, vm: VmHandle, state_file: str) -> None: ...

    async def plug_devices(self, vm: VmHandle, plan: SandboxPlan,
                           tap_fds: Sequence[int]) -> None: ...

    async def discard_template(self, template_dir: str, why: str) -> None: ...

    async def connect_agent(self, vm: VmHandle, plan: SandboxPlan) -> AgentClient: ...

    async def vcpu_threads(self, vm: VmHandle, count: int) -> dict[int, int]: ...

    async def port_forward(self, stack: contextlib.AsyncExitStack, agent: AgentClient,
                           plan: SandboxPlan) -> None: ...

    async def serve_metrics(self, stack: contextlib.AsyncExitStack, agent: AgentClient,
                            state_dir: str, figures: Callable[[], dict[str, Any]]
                            ) -> None: ...


class RealEffects:
    """The host's and the VMM's real calls."""

    def make_state_dir(self, state_dir: str) -> None:
        os.makedirs(os.path.dirname(state_dir), exist_ok=True)
        os.mkdir(state_dir, 0o700)
        record_owner(state_dir)  # at once: a sweep takes a dir without one for dead

    def remove_dir(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def share_dir(self, path: str) -> None:
        os.mkdir(path, 0o700)
        mounts.make_shared_bind(path)

    def bind(self, source: str, target: str, readonly: bool) -> None:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.isdir(source):
            os.mkdir(target)
        elif os.path.exists(source):
            with open(target, "x"):
                pass
        else:
            raise SpecError("config.json", f"mount source {source!r}", "does not exist")
        mounts.bind_mount(source, target, readonly=readonly)

    def unmount(self, target: str) -> None:
        mounts.unmount(target)

    def check_vfio(self, bdfs: Sequence[str]) -> None:
        check_vfio_ready(tuple(bdfs))

    def cgroups(self, plan: SandboxPlan, record: str) -> Cgroups:
        return SandboxCgroups(plan.cgroups, record)

    async def attach_network(self, stack: contextlib.AsyncExitStack, plan: NetworkPlan,
                             state_dir: str) -> Network:
        return await attach_network(stack, plan, state_dir)

    async def launch(self, plan: SandboxPlan, shared_dir: str, devices: Sequence[QemuOption],
                     fds: Sequence[int], ram: int | None = None) -> VmHandle:
        hv = plan.config.hypervisor
        return await vmm.launch(plan.vm, plan.state_dir, shared_dir, hv.virtio_fs_daemon,
                                hv.virtio_fs_cache, devices, fds, ram)

    async def clone_ram(self, stack: contextlib.AsyncExitStack, template: TemplatePlan,
                        cfg: Config, state_dir: str) -> Ram:
        ram = await factory.clone_ram(template, cfg, state_dir)
        stack.callback(ram.close)  # QEMU holds its own once started
        return ram

    async def restore(self, vm: VmHandle, state_file: str) -> None:
        await clone.restore_state(vm.qmp, state_file)

    async def plug_devices(self, vm: VmHandle, plan: SandboxPlan,
                           tap_fds: Sequence[int]) -> None:
        bus = plan.vm.arch.bus
        await clone.plug_shared_fs(vm.qmp, plan.vm.virtiofs_socket, bus)
        if plan.network:
            await clone.plug_nics(vm.qmp, plan.network, tap_fds, bus)

    async def discard_template(self, template_dir: str, why: str) -> None:
        await factory.discard(template_dir, why)

    async def connect_agent(self, vm: VmHandle, plan: SandboxPlan) -> AgentClient:
        assert isinstance(vm, vmm.Vm)
        if vm.agent_sock is not None:  # virtio-serial: connected before boot (see docs)
            reader, writer = await asyncio.open_unix_connection(sock=vm.agent_sock)
        else:
            reader, writer = await vmm.dial_vsock(plan.vm.guest_cid, AGENT_VSOCK_PORT)
        return AgentClient(TtrpcClient(reader, writer),
                           create_timeout=plan.config.runtime.create_container_timeout)

    async def vcpu_threads(self, vm: VmHandle, count: int) -> dict[int, int]:
        return await vcpu_threads(vm.qmp, count)

    async def port_forward(self, stack: contextlib.AsyncExitStack, agent: AgentClient,
                           plan: SandboxPlan) -> None:
        assert plan.network_request is not None
        await PortForwarder(agent, plan.network_request.netns, plan.id,
                            plan.state_dir).start(stack)

    async def serve_metrics(self, stack: contextlib.AsyncExitStack, agent: AgentClient,
                            state_dir: str, figures: Callable[[], dict[str, Any]]) -> None:
        await serve_metrics(stack, agent, state_dir, figures)
