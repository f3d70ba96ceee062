"""In-memory effects for `Sandbox`: every host and VMM call is logged, none touches the host
beyond the test's own directories, and any step can be made to fail."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from pykata.domain.config import Config
from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import HostError
from pykata.plan.network import NetworkPlan, NetworkRequest
from pykata.plan.qemu import QemuOption
from pykata.plan.sandbox import SandboxPlan
from pykata.plan.template import FileIds, TemplatePlan
from pykata.protocol.pb import agent_pb2 as pb
from pykata.sandbox.effects import Effects

GONE_TID = (1 << 22) + 7  # no such thread: affinity writes find it gone, as for a dead vCPU


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = asyncio.Event()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def exit(self, status: int) -> None:
        self.returncode = status
        self._exited.set()


class FakeQmp:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def execute(self, cmd: str, arguments: Mapping[str, object] | None = None) -> object:
        self.log.append(f"qmp {cmd}")
        return {}


class FakeVm:
    def __init__(self, fx: FakeEffects) -> None:
        self.fx = fx
        self.qemu, self.virtiofsd = FakeProcess(40001), FakeProcess(40002)
        self.qmp = FakeQmp(fx.log)

    async def connect_qmp(self) -> None:
        self.fx.step("qmp connect")

    async def shutdown(self) -> None:
        self.fx.log.append("-vm")
        for proc in (self.qemu, self.virtiofsd):
            if proc.returncode is None:
                proc.exit(0)

    def failure_detail(self) -> str:
        return "console: (fake)"


class FakeAgent:
    """The agent calls a sandbox makes, logged; `fail` names one that raises."""

    def __init__(self, fx: FakeEffects) -> None:
        self.fx = fx

    async def check(self) -> pb.HealthCheckResponse:
        self.fx.step("agent check")
        return pb.HealthCheckResponse(status=pb.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        self.fx.log.append("-agent")

    async def reseed_random(self, data: bytes) -> None:
        self.fx.step(f"agent reseed {len(data)}")

    async def set_guest_time(self, seconds: float) -> None:
        self.fx.step("agent set time")

    async def create_sandbox(self, req: pb.CreateSandboxRequest) -> None:
        self.fx.step(f"agent create_sandbox {req.storages[0].mount_point}")

    async def setup_network(self, req: pb.SetupNetworkRequest) -> None:
        self.fx.step("agent setup_network")

    async def create_container(self, req: pb.CreateContainerRequest) -> None:
        self.fx.step(f"agent create_container {req.container_id}")

    async def remove_container(self, cid: str, timeout: int = 0) -> None:
        self.fx.step(f"agent remove_container {cid}")

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"FakeAgent has no {name}")


class FakeCgroups:
    def __init__(self, fx: FakeEffects) -> None:
        self.fx = fx

    def create(self, qemu_pid: int, other_pids: Sequence[int]) -> None:
        self.fx.step(f"cgroups create {qemu_pid}")

    def update(self, cpuset: CpuSet | None, mems: CpuSet | None, vcpus: float) -> None:
        self.fx.step(f"cgroups update {vcpus:g}")

    def place_vcpus(self, tids: Iterable[int]) -> None:
        self.fx.step(f"cgroups place {len(list(tids))}")

    def remove(self) -> list[str]:
        self.fx.log.append("-cgroups")
        return []


class FakeNetwork:
    def __init__(self, fx: FakeEffects) -> None:
        self.fx = fx

    def qemu(self, bus: str) -> tuple[list[QemuOption], list[int]]:
        return [], []

    def close_fds(self) -> None:
        self.fx.log.append("taps to QEMU")

    def request(self, req: NetworkRequest) -> pb.SetupNetworkRequest:
        return pb.SetupNetworkRequest()


class FakeRam:
    fd = 99

    def __init__(self, fx: FakeEffects) -> None:
        self.fx = fx

    def start(self) -> None:
        self.fx.step("ram copy")

    async def finish(self) -> None:
        self.fx.step("ram copied")


class FakeEffects:
    """`fail_at`: the step (a log line's prefix) that raises HostError when reached."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.log: list[str] = []
        self.fail_at = fail_at
        self.vm: FakeVm | None = None

    def step(self, name: str) -> None:
        if self.fail_at is not None and name.startswith(self.fail_at):
            self.log.append(f"FAILED {name}")
            raise HostError(f"injected failure at {name}")
        self.log.append(name)

    def make_state_dir(self, state_dir: str) -> None:
        self.step("state dir")
        os.makedirs(state_dir)

    def remove_dir(self, path: str) -> None:
        self.log.append(f"-dir {os.path.basename(path)}")
        shutil.rmtree(path, ignore_errors=True)

    def share_dir(self, path: str) -> None:
        self.step("share dir")
        os.mkdir(path)

    def bind(self, source: str, target: str, readonly: bool) -> None:
        self.step(f"bind {os.path.basename(target)}")
        os.makedirs(target)

    def unmount(self, target: str) -> None:
        self.log.append(f"-mount {os.path.basename(target)}")

    def check_vfio(self, bdfs: Sequence[str]) -> None:
        self.step("vfio check")

    def cgroups(self, plan: SandboxPlan, record: str) -> FakeCgroups:
        self.step("cgroups")
        return FakeCgroups(self)

    async def attach_network(self, stack: contextlib.AsyncExitStack, plan: NetworkPlan,
                             state_dir: str) -> FakeNetwork:
        self.step("network")
        stack.callback(self.log.append, "-network")
        return FakeNetwork(self)

    async def launch(self, plan: SandboxPlan, shared_dir: str, devices: Sequence[QemuOption],
                     fds: Sequence[int], ram: int | None = None) -> FakeVm:
        self.step("launch" if ram is None else "launch clone")
        self.vm = FakeVm(self)
        return self.vm

    async def clone_ram(self, stack: contextlib.AsyncExitStack, template: TemplatePlan,
                        cfg: Config, state_dir: str) -> FakeRam:
        self.step("clone ram")
        stack.callback(self.log.append, "-clone ram")
        return FakeRam(self)

    async def restore(self, vm: FakeVm, state_file: str) -> None:
        self.step("restore")

    async def plug_devices(self, vm: FakeVm, plan: SandboxPlan,
                           tap_fds: Sequence[int]) -> None:
        self.step("plug devices")

    async def discard_template(self, template_dir: str, why: str) -> None:
        self.step("discard template")

    async def connect_agent(self, vm: FakeVm, plan: SandboxPlan) -> FakeAgent:
        self.step("agent connect")
        return FakeAgent(self)

    async def vcpu_threads(self, vm: FakeVm, count: int) -> dict[int, int]:
        self.step("vcpu threads")
        return {0: GONE_TID}

    async def port_forward(self, stack: contextlib.AsyncExitStack, agent: FakeAgent,
                           plan: SandboxPlan) -> None:
        self.step("port forward")
        stack.callback(self.log.append, "-port forward")

    async def serve_metrics(self, stack: contextlib.AsyncExitStack, agent: FakeAgent,
                            state_dir: str, figures: object) -> None:
        self.step("serve metrics")
        stack.callback(self.log.append, "-serve metrics")


def as_effects(fx: FakeEffects) -> Effects:
    """The fakes stand in for the real agent client and VM (duck-typed)."""
    return cast(Effects, fx)


def file_ids(qemu: str = "q", kernel: str = "k", initrd: str = "i",
             image_dir: str = "/var/lib/pykata") -> FileIds:
    """A template key's file identities for the built image's kernel and initramfs."""
    return FileIds(qemu, {f"{image_dir}/image/vmlinuz": kernel,
                          f"{image_dir}/image/initramfs.img": initrd})
