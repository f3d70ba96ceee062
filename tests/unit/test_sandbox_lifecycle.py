"""The sandbox lifecycle through fake effects, no QEMU: start's steps in order, a failure at
any step unwinds exactly what was done, containers share and unshare, teardown reverses."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from sandbox_fakes import FakeEffects, as_effects, file_ids

from pykata.domain.config import build_config
from pykata.domain.errors import HostError, PykataError
from pykata.domain.host import HostFacts
from pykata.domain.network import IpAddress
from pykata.domain.spec import default_spec, parse_spec
from pykata.plan.network import HostLink, NetworkRequest
from pykata.plan.sandbox import NetnsFacts, SandboxPlan, SandboxRequest, plan_sandbox
from pykata.sandbox.sandbox import Sandbox
from pykata.sandbox.state import SandboxState

START = ["state dir", "share dir", "vfio check", "cgroups", "network", "launch",
         "taps to QEMU", "cgroups create 40001", "qmp connect", "agent connect", "agent check",
         "agent create_sandbox /run/pykata/shared", "agent setup_network", "port forward",
         "vcpu threads", "cgroups update 0", "cgroups place 1", "serve metrics"]
STOP = ["-serve metrics", "-port forward", "-agent", "-vm", "-network", "-cgroups",
        "-mount shared", "-dir sb1"]


def _plan(tmp_path: Path) -> SandboxPlan:
    cfg = build_config([("t", {"runtime": {"state_dir": str(tmp_path / "state")}})])
    facts = HostFacts(frozenset(), False, "", False, online_cpus=2, mem_total_mib=4096)
    eth0 = HostLink(2, "eth0", "02:00:00:00:00:01", 1500, "veth", True,
                    addresses=(IpAddress("10.0.0.2", 24),))
    return plan_sandbox(SandboxRequest(
        "sb1", cfg, facts, resizable=False, network=NetworkRequest("/var/run/netns/pod"),
        netns=NetnsFacts((eth0,), ()), port_forward=True))


def _started(tmp_path: Path, fx: FakeEffects) -> Sandbox:
    sandbox = Sandbox(_plan(tmp_path), as_effects(fx))
    asyncio.run(sandbox.start())
    return sandbox


def test_start_then_stop_reverses_every_step(tmp_path: Path) -> None:
    fx = FakeEffects()

    async def main() -> None:
        sandbox = Sandbox(_plan(tmp_path), as_effects(fx))
        await sandbox.start()
        assert sandbox.state is SandboxState.RUNNING
        assert fx.log == START
        assert (tmp_path / "state/sb1/plan.json").exists()
        fx.log.clear()
        await sandbox.stop()
        await sandbox.stop()  # again: nothing more
        assert sandbox.state.value == "stopped"

    asyncio.run(main())
    assert fx.log == STOP
    assert list((tmp_path / "state").iterdir()) == []


UNDO = {"state dir": "-dir sb1", "share dir": "-mount shared", "cgroups": "-cgroups",
        "network": "-network", "launch": "-vm", "agent check": "-agent",
        "port forward": "-port forward"}


@pytest.mark.parametrize("failing", [s for s in START if s != "taps to QEMU"])
def test_a_failure_at_any_step_unwinds_what_was_done(tmp_path: Path, failing: str) -> None:
    fx = FakeEffects(fail_at=failing)
    sandbox = Sandbox(_plan(tmp_path), as_effects(fx))
    with pytest.raises(PykataError, match=f"injected failure at {failing}"):
        asyncio.run(sandbox.start())
    assert sandbox.state is SandboxState.STOPPED
    first_undo = next((i for i, line in enumerate(fx.log) if line.startswith("-")),
                      len(fx.log))
    forward, undone = fx.log[:first_undo], fx.log[first_undo:]
    # Steps ran in order up to the failure (QMP and the agent connect side by side).
    ran = [line for line in forward if not line.startswith("FAILED")]
    assert ran == [s for s in START if s in ran] and f"FAILED {failing}" in forward
    # What was set up is undone, newest first, and nothing else is.
    acquired = [UNDO[line] for line in ran if line in UNDO]
    if "agent connect" in ran and "-agent" not in acquired:  # a connection, unchecked
        acquired.insert(acquired.index("-vm") + 1, "-agent")
    assert undone == list(reversed(acquired))
    assert not (tmp_path / "state/sb1").exists()


def test_containers_share_and_unshare(tmp_path: Path) -> None:
    fx = FakeEffects()
    sandbox = _started(tmp_path, fx)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    spec = parse_spec(default_spec(["true"]), "test")

    async def main() -> None:
        fx.log.clear()
        await sandbox.create_container("c1", spec, str(rootfs))
        assert fx.log == ["bind rootfs", "agent create_container c1"]
        fx.log.clear()
        await sandbox.remove_container("c1")
        assert fx.log == ["agent remove_container c1", "-mount rootfs", "-dir c1"]
        fx.fail_at = "agent create_container"
        fx.log.clear()
        with pytest.raises(HostError):
            await sandbox.create_container("c2", spec, str(rootfs))
        assert fx.log == ["bind rootfs", "FAILED agent create_container c2", "-mount rootfs",
                          "-dir c2"]
        assert sandbox.containers == {}
        await sandbox.stop()

    asyncio.run(main())


def test_resize_of_a_static_vm_only_places_vcpus(tmp_path: Path) -> None:
    fx = FakeEffects()
    sandbox = _started(tmp_path, fx)

    async def main() -> None:
        fx.log.clear()
        size = await sandbox.resize([])
        assert (size.vcpus, size.memory_mib) == (sandbox.plan.sizing.vcpus,
                                                 sandbox.plan.sizing.memory_mib)
        assert fx.log == ["vcpu threads", "cgroups update 0", "cgroups place 1"]
        await sandbox.stop()

    asyncio.run(main())


def test_a_dead_vm_is_seen(tmp_path: Path) -> None:
    fx = FakeEffects()

    async def main() -> None:
        sandbox = Sandbox(_plan(tmp_path), as_effects(fx))
        await sandbox.start()
        assert fx.vm is not None
        fx.vm.virtiofsd.exit(-9)
        assert await sandbox.wait_vm() == "virtiofsd exited (status -9)"
        await sandbox.stop()

    asyncio.run(main())


def _clone_plan(tmp_path: Path) -> SandboxPlan:
    """The same sandbox as `_plan`, templating on, a template there already."""
    cfg = build_config([("t", {"runtime": {"state_dir": str(tmp_path / "state")},
                               "factory": {"enable_template": True,
                                           "template_path": str(tmp_path / "tpl")}})])
    plan = _plan(tmp_path)
    req = SandboxRequest("sb1", cfg, plan.facts, resizable=False,
                         network=plan.network_request, netns=NetnsFacts(
                             (HostLink(2, "eth0", "02:00:00:00:00:01", 1500, "veth", True),),
                             ()),
                         port_forward=True, template_files=file_ids())
    first = plan_sandbox(req)
    assert first.template is not None
    return plan_sandbox(dataclasses.replace(req, template_on_disk=first.template.key))


CLONE_START = ["state dir", "share dir", "vfio check", "cgroups", "network", "clone ram",
               "launch clone", "cgroups create 40001", "ram copy", "qmp connect",
               "agent connect", "ram copied", "restore", "plug devices", "agent check",
               "agent reseed 64", "agent set time", "taps to QEMU",
               "agent create_sandbox /run/pykata/shared", "agent setup_network",
               "port forward", "vcpu threads", "cgroups update 0", "cgroups place 1",
               "serve metrics"]


def test_a_clone_restores_then_gets_the_pods_devices(tmp_path: Path) -> None:
    fx = FakeEffects()

    async def main() -> None:
        sandbox = Sandbox(_clone_plan(tmp_path), as_effects(fx))
        await sandbox.start()
        assert sandbox.plan.boot == "clone"
        figures = sandbox.owner_figures()
        assert figures["boot"] == "clone" and figures["ready_s"] is not None
        await sandbox.stop()

    asyncio.run(main())
    cut = fx.log.index("-serve metrics")
    assert sorted(fx.log[:cut]) == sorted(CLONE_START)  # QMP and agent connect side by side
    assert fx.log[:cut][-10:] == CLONE_START[-10:]
    assert "-clone ram" in fx.log[cut:]


@pytest.mark.parametrize("failing", ["clone ram", "ram copy", "ram copied", "restore",
                                     "plug devices", "agent reseed"])
def test_a_failed_clone_boots_cold(tmp_path: Path, failing: str) -> None:
    fx = FakeEffects(fail_at=failing)

    async def main() -> None:
        sandbox = Sandbox(_clone_plan(tmp_path), as_effects(fx))
        await sandbox.start()
        assert sandbox.plan.boot == "cold"
        assert "the clone failed: injected failure" in sandbox.plan.boot_reason
        assert sandbox.state is SandboxState.RUNNING
        await sandbox.stop()

    asyncio.run(main())
    after = fx.log[fx.log.index(next(x for x in fx.log if x.startswith("FAILED"))):]
    assert "discard template" in after
    assert "launch" in after and "plug devices" not in after[1:]
    if failing != "clone ram":
        assert after.index("-vm") < after.index("launch")  # the clone's VM went first
