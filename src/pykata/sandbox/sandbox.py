"""A sandbox: one VM, its agent connection, and the containers in it.

Every resource is registered on an AsyncExitStack the moment it exists, so `stop()`
unwinds exactly what was set up, in reverse order, after success, failure or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pykata.domain import ids
from pykata.domain.config import Config
from pykata.domain.contract import GUEST_SHARED_DIR, SHARED_TAG
from pykata.domain.errors import (
    DuplicateId,
    HostError,
    ProtocolError,
    PykataError,
    UnknownId,
    VmmError,
)
from pykata.domain.host import HostFacts
from pykata.domain.limits import Limits
from pykata.domain.spec import Spec
from pykata.host.cgroups import RECORD_FILE
from pykata.plan.guest_spec import PodNamespaces, plan_guest_spec
from pykata.plan.network import NetworkRequest
from pykata.plan.pinning import check_cpusets, host_cpu_set
from pykata.plan.sandbox import SandboxPlan, plan_sandbox
from pykata.plan.sizing import ResizeTarget
from pykata.plan.vm import NO_LIMITS, VmPlan
from pykata.protocol.pb import agent_pb2 as pb
from pykata.sandbox.agent_client import AgentClient
from pykata.sandbox.effects import Cgroups, Effects, Network, Ram, RealEffects, VmHandle
from pykata.sandbox.factory import INCOMING
from pykata.sandbox.leftovers import record_pids
from pykata.sandbox.owner_stats import OwnerStats
from pykata.sandbox.placement import Placement
from pykata.sandbox.request import request_from_parts
from pykata.sandbox.resize import Resizer
from pykata.sandbox.state import SandboxState, check_transition, require

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"  # the VM's plan, for `pykata inspect`
RESEED_BYTES = 64  # host entropy for a clone's CRNG (256 bits would do)
VM_EXIT_WAIT = 2.0  # a lost agent connection: how long QEMU's exit may lag behind it


@dataclass
class Container:
    id: str
    mounts: list[str] = field(default_factory=list)  # host mounts below the shared dir


class Sandbox:
    """Executes a `SandboxPlan`: `start()` boots the VM and attaches the pod to it,
    containers come and go, `stop()` unwinds exactly what was set up."""

    def __init__(self, plan: SandboxPlan, effects: Effects | None = None,
                 stats: OwnerStats | None = None) -> None:
        """`effects`: how it acts on the host and the VMM (tests pass fakes); `stats`:
        where its owner's figures go (a shim's holds its RPC times too)."""
        self._fx: Effects = effects or RealEffects()
        self.sandbox_plan = plan
        self.id = plan.id
        self.cgroups: Cgroups | None = None
        self.cfg = cfg = plan.config
        self.state_dir = plan.state_dir
        self.shared_dir = os.path.join(self.state_dir, "shared")
        self.plan: VmPlan = plan.vm
        self.network = plan.network_request if plan.network else None
        self.state = SandboxState.CREATED
        self.containers: dict[str, Container] = {}
        self.vm: VmHandle | None = None
        sizing = self.plan.sizing
        self.stats = stats or OwnerStats()  # what `pykata monitor` gets from this owner
        self._resizer = Resizer(sizing, ResizeTarget(sizing.vcpus, sizing.memory_mib),
                                self.plan.numa, stats=self.stats)
        facts = plan.facts
        self._host_cpus = host_cpu_set(facts.online_cpus, [n.cpus for n in facts.topology.nodes])
        self._host_nodes = facts.topology.node_ids
        self._check_cpusets([plan.workload], "sandbox")
        self._workload = plan.workload
        self.placement = Placement(cfg.runtime.enable_vcpus_pinning, self._host_cpus,
                                   self.plan.numa, self.state_dir)
        # One resize or re-placement at a time: a container update racing a hotplug ends in
        # the state the last of them asks for.
        self._resources = asyncio.Lock()
        self._agent: AgentClient | None = None
        self._stack = contextlib.AsyncExitStack()

    @classmethod
    def from_parts(cls, cfg: Config, facts: HostFacts, sandbox_id: str | None = None, *,
                   devices: frozenset[str] = frozenset(), workload: Limits = NO_LIMITS,
                   resizable: bool = True, vfio_groups: tuple[int, ...] = (),
                   cgroups_path: str | None = None, network: NetworkRequest | None = None,
                   port_forward: bool = False) -> Sandbox:
        """A sandbox without a spec (tests, benchmarks, `pykata check --boot`):
        `devices`: the QEMU binary's (none: sized statically, no hotplug headroom);
        `workload`: the limits known at boot; `resizable`: containers may come and go;
        `vfio_groups`: IOMMU groups passed through; `cgroups_path`: the OCI
        `linux.cgroupsPath`; `network`: the pod's network namespace (none: no network
        device); `port_forward`: answer dials to localhost there from the guest."""
        return cls(plan_sandbox(request_from_parts(
            cfg, facts, sandbox_id, devices=devices, workload=workload, resizable=resizable,
            vfio_groups=vfio_groups, cgroups_path=cgroups_path, network=network,
            port_forward=port_forward)))

    @property
    def agent(self) -> AgentClient:
        require("agent call", self.state, SandboxState.RUNNING)
        assert self._agent is not None
        return self._agent

    def _move(self, what: str, target: SandboxState) -> None:
        check_transition(what, self.state, target)
        self.state = target

    async def start(self) -> None:
        self._move("start sandbox", SandboxState.STARTING)
        started = time.monotonic()
        try:
            await self._start()
        except OSError as exc:
            await self.stop()
            raise HostError(f"sandbox {self.id}: {exc}") from exc
        except BaseException:
            await self.stop()
            raise
        self.stats.ready_s = time.monotonic() - started
        self._move("start sandbox", SandboxState.RUNNING)

    async def _start(self) -> None:
        """Host first, then the VM, then the pod attached to it. The VM is booted cold here;
        the pod's part (`_attach_pod`) would be the same for a VM from elsewhere."""
        net = await self._prepare_host()
        vm = await self._boot_vm(net)
        await self._attach_pod(vm, net)

    async def _prepare_host(self) -> Network | None:
        """The state directory, the shared directory, the host cgroups and the pod's taps."""
        self._fx.make_state_dir(self.state_dir)
        self._stack.callback(self._fx.remove_dir, self.state_dir)
        self._record_plan()
        self._fx.share_dir(self.shared_dir)
        self._stack.callback(self._fx.unmount, self.shared_dir)
        self._stack.callback(self._unshare_all)
        self._fx.check_vfio([d.bdf for d in self.plan.passthrough])
        self.cgroups = self._fx.cgroups(self.sandbox_plan,
                                        os.path.join(self.state_dir, RECORD_FILE))
        self._stack.callback(self.cgroups.remove)  # after QEMU and virtiofsd have stopped
        network = self.sandbox_plan.network
        return (await self._fx.attach_network(self._stack, network, self.state_dir)
                if network else None)

    async def _boot_vm(self, net: Network | None) -> VmHandle:
        """A clone of the template where the plan says so, else (or when that fails) a
        cold boot: QEMU and virtiofsd up, QMP and the agent connected."""
        if self.plan.boot == "clone" and (vm := await self._try_clone(net)) is not None:
            return vm
        return await self._start_vm(self._stack, net)

    async def _try_clone(self, net: Network | None) -> VmHandle | None:
        """The template's RAM copied, QEMU started on it and its saved state restored, the
        pod's devices hot-plugged, the guest given fresh entropy and the host's clock. On
        failure everything of the clone is undone, the template is discarded (the next
        start remakes it) and the plan falls back to a cold boot."""
        template = self.sandbox_plan.template
        assert template is not None
        stack = contextlib.AsyncExitStack()
        try:
            ram = await self._fx.clone_ram(stack, template, self.cfg, self.state_dir)
            vm = await self._start_vm(stack, net, ram)
            agent = self._agent
            assert agent is not None
            await agent.reseed_random(os.urandom(RESEED_BYTES))
            await agent.set_guest_time(time.time())
        except BaseException as exc:
            await stack.aclose()
            self.vm = self._agent = None
            if not isinstance(exc, PykataError | OSError):
                raise  # cancelled (a signal, a shutdown): no cold boot either
            # Made but unusable, or badly copied: either way the next start remakes it.
            why = (str(exc).splitlines() or [repr(exc)])[0]
            await self._fx.discard_template(template.dir, why)
            self._fall_back(f"the clone failed: {why}")
            return None
        self._stack.push_async_exit(stack)
        if net:
            net.close_fds()  # QEMU has its own
        return vm

    def _fall_back(self, why: str) -> None:
        assert self.sandbox_plan.fallback is not None
        log.warning("sandbox %s: booting cold: %s", self.id, why)
        cold = dataclasses.replace(self.sandbox_plan.fallback, boot_reason=why)
        self.sandbox_plan = dataclasses.replace(self.sandbox_plan, vm=cold, template=None)
        self.plan = cold
        self._resizer = Resizer(cold.sizing, ResizeTarget(cold.vcpus, cold.memory_mib),
                                stats=self.stats)
        self._record_plan()

    async def _start_vm(self, stack: contextlib.AsyncExitStack, net: Network | None,
                        ram: Ram | None = None) -> VmHandle:
        """Launch (a clone on `ram`, copied from here on), then QMP (and a clone's restore
        and hotplug) and the agent at once; the first failure ends the other (a QMP
        failure need not wait out the agent's dial timeout). What exists is on `stack`.
        A cold boot's taps go to QEMU in its argv, a clone's by hotplug."""
        devices, fds = net.qemu(self.plan.arch.bus) if net and not ram else ([], [])
        vm = await self._fx.launch(self.sandbox_plan, self.shared_dir, devices, fds,
                                   ram.fd if ram else None)
        self.vm = vm
        stack.push_async_callback(vm.shutdown)
        if net and not ram:
            net.close_fds()  # QEMU's now: the taps go when it exits
        record_pids(self.state_dir, {"qemu": vm.qemu.pid, "virtiofsd": vm.virtiofsd.pid})
        # Into the pod's cgroups before the guest's RAM is touched (a boot) or written (a
        # clone's copy, by this process): memory is charged where it is first allocated.
        assert self.cgroups is not None
        self.cgroups.create(vm.qemu.pid, [vm.virtiofsd.pid, os.getpid()])
        if ram:
            ram.start()
        qmp = asyncio.ensure_future(self._connect_qmp(vm, ram, net))
        agent = asyncio.ensure_future(self._connect_agent(vm, stack))
        try:
            await asyncio.wait({qmp, agent}, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in (qmp, agent):
                task.cancel()
            await asyncio.gather(qmp, agent, return_exceptions=True)
        for task in (qmp, agent):
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        self._agent = agent.result()
        return vm

    async def _connect_qmp(self, vm: VmHandle, ram: Ram | None, net: Network | None) -> None:
        """QMP; for a clone, once its RAM is copied, the restore, then at once the devices
        a cold boot has from the start (the shared fs and the pod's NICs): the guest probes
        them while its agent answers."""
        await vm.connect_qmp()
        if ram is None:
            return
        await ram.finish()
        await self._fx.restore(vm, os.path.join(self.state_dir, INCOMING))
        fds = net.qemu(self.plan.arch.bus)[1] if net else []
        await self._fx.plug_devices(vm, self.sandbox_plan, fds)

    async def _attach_pod(self, vm: VmHandle, net: Network | None) -> None:
        """The pod's part: a clone's growth to the pod's size, the shared filesystem in the
        guest, its network and port-forward, and the vCPUs placed for its workload."""
        assert self.cgroups is not None and self._agent is not None
        if self.plan.grow_to:  # a clone, to the pod's boot size
            await self._resizer.grow(vm.qmp, self._agent, ResizeTarget(*self.plan.grow_to))
        storage = pb.Storage(driver="virtiofs", source=SHARED_TAG, fstype="virtiofs",
                             mount_point=GUEST_SHARED_DIR)
        await self._agent.create_sandbox(
            pb.CreateSandboxRequest(sandbox_id=self.id, storages=[storage]))
        if net and self.network:
            await self._agent.setup_network(net.request(self.network))
            if self.sandbox_plan.port_forward:
                await self._fx.port_forward(self._stack, self._agent, self.sandbox_plan)
        await self._place_vcpus([self._workload])
        await self._fx.serve_metrics(self._stack, self._agent, self.state_dir,
                                     self.owner_figures)

    def owner_figures(self) -> dict[str, Any]:
        """What `pykata monitor` gets from this sandbox's owner: its measurements, how it
        booted, and its size now."""
        return {**self.stats.to_json(), "boot": self.plan.boot,
                "size": [self.size.vcpus, self.size.memory_mib]}

    def _record_plan(self) -> None:
        """What `pykata inspect` shows beside what it reads live."""
        s = self.plan.sizing
        vcpus, memory = self.plan.start_size
        doc = {"vcpus": vcpus, "max_vcpus": s.max_vcpus, "memory_mib": memory,
               "max_memory_mib": s.max_memory_mib, "memory_hotplug": s.memory_hotplug,
               "boot": self.plan.boot, "pod": dict(self.sandbox_plan.pod_labels),
               "boot_reason": self.plan.boot_reason,
               "numa": self.plan.numa.to_json() if self.plan.numa else None,
               "devices": [d.to_json() for d in self.plan.passthrough]}
        with open(os.path.join(self.state_dir, PLAN_FILE), "w") as f:
            json.dump(doc, f)

    async def _place_vcpus(self, containers: Sequence[Limits]) -> None:
        """Every vCPU thread (a hot-plugged one starts in QEMU's own cgroup) into the sandbox
        cgroup, which carries the pod's cpuset and CPU limit, then its affinity. In that
        order: a v1 cpuset write or a move into a cpuset resets a thread's affinity."""
        assert self.vm is not None and self.cgroups is not None
        threads = await self._fx.vcpu_threads(self.vm, self.size.vcpus)
        pod = sum(containers, Limits())
        self.cgroups.update(pod.cpuset or None, pod.mems or None, pod.vcpus)
        self.cgroups.place_vcpus(threads.values())
        self.placement.place(threads, [c.cpuset for c in containers])

    async def wait_vm(self) -> str:
        """Returns once QEMU or virtiofsd exits (stopped, crashed or killed): which, and its
        status. Without virtiofsd the guest cannot reach its containers' files: the VM is
        as good as dead."""
        require("wait for the VM", self.state, SandboxState.RUNNING, SandboxState.STOPPING,
                SandboxState.STOPPED)
        assert self.vm is not None
        waits = {asyncio.ensure_future(self.vm.qemu.wait()): "QEMU",
                 asyncio.ensure_future(self.vm.virtiofsd.wait()): "virtiofsd"}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        first = next(iter(done))
        return f"{waits[first]} exited (status {first.result()})"

    async def _connect_agent(self, vm: VmHandle, stack: contextlib.AsyncExitStack
                             ) -> AgentClient:
        died = asyncio.ensure_future(vm.qemu.wait())
        check = asyncio.ensure_future(self._dial_and_check(vm, stack))
        try:
            done, _ = await asyncio.wait({died, check}, timeout=self.cfg.agent.dial_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            died.cancel()
            check.cancel()
        if check in done and not check.cancelled() and check.exception() is None:
            return check.result()
        why = ("QEMU exited" if died in done else
               f"no answer in {self.cfg.agent.dial_timeout:g} s" if not done else
               f"health check failed: {check.exception()}")
        raise VmmError(f"agent did not come up: {why}\n{vm.failure_detail()}")

    async def _dial_and_check(self, vm: VmHandle, stack: contextlib.AsyncExitStack
                              ) -> AgentClient:
        client = await self._fx.connect_agent(vm, self.sandbox_plan)
        stack.push_async_callback(client.close)
        await client.check()
        return client

    async def create_container(self, cid: str, spec: Spec, rootfs: str) -> list[str]:
        """Share `rootfs` and the spec's host binds into the VM and create the container;
        returns spec warnings. On failure nothing of the container is left."""
        require("create container", self.state, SandboxState.RUNNING)
        ids.check_id("container id", cid)  # it becomes a path below the shared dir
        if cid in self.containers:
            raise DuplicateId("container", cid, f"sandbox {self.id}")
        guest = plan_guest_spec(spec.doc, cid, self.plan.numa,
                                vm_netns=self.network is not None, pod=self._pod(cid))
        container = self.containers[cid] = Container(cid)
        try:
            self._share(container, rootfs, "rootfs", spec.root_readonly)
            for share in guest.shares:
                self._share(container, share.source, share.name, share.readonly)
            req = pb.CreateContainerRequest(container_id=cid,
                                            oci_spec_json=json.dumps(guest.doc).encode())
            await self.agent.create_container(req)
        except BaseException:
            self._unshare(container)
            raise
        return guest.warnings

    def _pod(self, cid: str) -> PodNamespaces | None:
        """For a pod member: the namespaces of the pod's sandbox container, the container
        whose id is the sandbox's (CRI's pause), which the member may name to join."""
        if cid == self.id or self.id not in self.containers or self.vm is None:
            return None
        return PodNamespaces(self.vm.qemu.pid, self.id)

    def _share(self, c: Container, source: str, name: str, readonly: bool) -> None:
        target = os.path.join(self.shared_dir, c.id, name)
        self._fx.bind(source, target, readonly)
        c.mounts.append(target)

    def _unshare(self, c: Container) -> None:
        for target in reversed(c.mounts):
            self._fx.unmount(target)
        c.mounts.clear()
        self._fx.remove_dir(os.path.join(self.shared_dir, c.id))
        self.containers.pop(c.id, None)

    async def remove_container(self, cid: str, in_guest: bool = True) -> None:
        """Remove the container in the guest (killing what is left of it), then its shares.
        The shares go even when the guest call fails. A VM that died took the container
        with it: that is no error, even before its watcher has stopped the sandbox.
        `in_guest=False`: only the shares (the VM is about to stop)."""
        container = self.containers.get(cid)
        if container is None and self.state is not SandboxState.RUNNING:
            return  # stopping the sandbox removed it
        if container is None:
            raise UnknownId("container", cid, f"sandbox {self.id}")
        try:
            if self.state is SandboxState.RUNNING and in_guest:
                await self.agent.remove_container(cid)
        except ProtocolError:
            if not await self._vm_exited():
                raise
        finally:
            self._unshare(container)

    async def _vm_exited(self, within: float = VM_EXIT_WAIT) -> bool:
        """Whether QEMU has exited, or does so within `within` s (its agent connection can
        be seen to close before its exit is)."""
        assert self.vm is not None
        try:
            await asyncio.wait_for(self.vm.qemu.wait(), within)
        except TimeoutError:
            return False
        return True

    def _unshare_all(self) -> None:
        for container in list(self.containers.values()):
            self._unshare(container)

    @property
    def size(self) -> ResizeTarget:
        """The VM's size now: the boot size, then what the last resize reached."""
        return self._resizer.size

    def _check_cpusets(self, containers: Sequence[Limits], source: str) -> None:
        for c in containers:
            check_cpusets(c.cpuset, c.mems, self._host_cpus, self._host_nodes, source)

    async def resize(self, containers: Sequence[Limits]) -> ResizeTarget:
        """Size the VM for `containers` (the running ones' limits): default + their sum,
        hot-plugged and seen by the guest, then place the vCPU threads for their cpusets.
        Serialised per sandbox; a static VM, or one already at the target, keeps its size.
        Returns the size reached."""
        require("resize", self.state, SandboxState.RUNNING)
        assert self.vm is not None
        self._check_cpusets(containers, "container")
        try:
            async with self._resources:
                size = await self._resizer.resize(self.vm.qmp, self.agent, containers)
                await self._place_vcpus(containers)
                return size
        except VmmError as exc:
            if not await self._vm_exited():
                raise
            raise VmmError(f"{exc}: QEMU exited\n{self.vm.failure_detail()}") from exc

    async def stop(self) -> None:
        """Tear everything down. Safe to call in any state, more than once."""
        if self.state in (SandboxState.STOPPING, SandboxState.STOPPED):
            return
        self._move("stop sandbox", SandboxState.STOPPING)
        # No DestroySandbox first: nothing in the VM outlives it, and writes through virtiofs
        # are already on the host (no writeback cache); it would cost ~350 ms under TCG.
        try:
            await self._stack.aclose()
        finally:
            self.state = SandboxState.STOPPED
