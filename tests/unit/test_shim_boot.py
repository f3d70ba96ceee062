"""pykata.shim.boot: the sandbox container's OCI cgroupsPath reaches the Sandbox."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from pykata.domain.errors import CgroupError
from pykata.domain.spec import default_spec, parse_spec
from pykata.plan.sandbox import SandboxPlan
from pykata.shim import boot
from pykata.shim.args import PodRole
from pykata.shim.bundle import BootRequest


class FakeSandbox:
    made: ClassVar[list[SandboxPlan]] = []

    def __init__(self, plan: SandboxPlan, stats: object = None) -> None:
        self.id = plan.id
        self.made.append(plan)

    async def start(self) -> None:
        pass


def _request(cgroups_path: object) -> BootRequest:
    doc = default_spec(["true"])
    if cgroups_path is not None:
        doc["linux"]["cgroupsPath"] = cgroups_path
    return BootRequest("t1", parse_spec(doc, "config.json"), PodRole("t1", True, False), "")


@pytest.mark.parametrize(("value", "want"), [
    pytest.param("/default/t1", "/default/t1", id="ctr"),
    pytest.param("kubepods.slice:cri-containerd:t1", "kubepods.slice:cri-containerd:t1",
                 id="systemd"),
    pytest.param(None, None, id="absent"),
])
def test_boot_passes_the_cgroups_path(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                      want: str | None) -> None:
    FakeSandbox.made.clear()
    monkeypatch.setattr(boot, "Sandbox", FakeSandbox)
    asyncio.run(boot.boot_sandbox(_request(value)))
    plan = FakeSandbox.made[0]
    assert (plan.id, plan.cgroups_path) == ("t1", want)
    assert plan.cgroup == (want if want and want.startswith("/") else plan.cgroup)


def test_boot_refuses_a_cgroups_path_that_is_not_a_string(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boot, "Sandbox", FakeSandbox)
    with pytest.raises(CgroupError, match=r"linux.cgroupsPath \['/a'\]: must be a string"):
        asyncio.run(boot.boot_sandbox(_request(["/a"])))
