"""The template factory without a VM: a recent failed making sends starts cold at once (no
second boot to fail), an old one or none lets the next start try again."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from pykata.domain.config import build_config
from pykata.domain.errors import VmmError
from pykata.domain.host import HostFacts
from pykata.plan.sandbox import SandboxRequest, plan_template_vm
from pykata.plan.template import FileIds, TemplatePlan, template_key
from pykata.sandbox import factory

FACTS = HostFacts(frozenset(), False, "", False, online_cpus=2, mem_total_mib=8192)


def _plan(tmp_path: Path) -> tuple[TemplatePlan, Any]:
    cfg = build_config([("t", {"runtime": {"state_dir": str(tmp_path / "run")},
                               "factory": {"template_path": str(tmp_path / "tpl")}})])
    vm = plan_template_vm(cfg, SandboxRequest("x", cfg, FACTS))
    return TemplatePlan(vm, template_key(vm, FileIds("q", "k", "i"))), cfg


def _fail(tmp_path: Path, age: float) -> None:
    (tmp_path / "tpl").mkdir(exist_ok=True)
    (tmp_path / "tpl" / factory.FAILED).write_text(
        json.dumps({"time": time.time() - age, "why": "agent did not come up"}))


def test_a_recent_failure_fails_fast_and_names_why(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    plan, cfg = _plan(tmp_path)
    _fail(tmp_path, age=5)

    async def never(*_: object) -> None:
        raise AssertionError("made again despite the recent failure")

    monkeypatch.setattr(factory, "make_template", never)
    with pytest.raises(VmmError, match=r"making it failed \d+ s ago .*agent did not come up"):
        asyncio.run(factory.clone_ram(plan, cfg, str(tmp_path)))


@pytest.mark.parametrize("age", [factory.RETRY_AFTER_S + 1, None])
def test_an_old_failure_or_none_tries_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            age: float | None) -> None:
    plan, cfg = _plan(tmp_path)
    if age is not None:
        _fail(tmp_path, age)
    tried: list[str] = []

    async def make(p: TemplatePlan, c: Any) -> dict[str, Any]:
        tried.append(p.dir)
        raise VmmError("still no template")

    monkeypatch.setattr(factory, "make_template", make)
    with pytest.raises(VmmError, match="still no template"):
        asyncio.run(factory.clone_ram(plan, cfg, str(tmp_path)))
    assert tried == [str(tmp_path / "tpl")]


def test_recent_failure_reads_only_a_good_record(tmp_path: Path) -> None:
    assert factory.recent_failure(str(tmp_path)) is None
    (tmp_path / factory.FAILED).write_text("not json")
    assert factory.recent_failure(str(tmp_path)) is None
    (tmp_path / factory.FAILED).write_text(json.dumps({"time": time.time(), "why": "x"}))
    assert (factory.recent_failure(str(tmp_path)) or "").endswith(": x")


def test_a_failed_making_is_recorded_and_leaves_no_half_template(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, cfg = _plan(tmp_path)

    async def boot_fails(*_: object) -> int:
        raise VmmError("template VM: agent did not come up: QEMU exited\nconsole: ...")

    monkeypatch.setattr(factory, "_boot_and_save", boot_fails)
    with pytest.raises(VmmError):
        asyncio.run(factory.make_template(plan, cfg))
    assert sorted(p.name for p in (tmp_path / "tpl").iterdir()) == [factory.FAILED,
                                                                    "template.lock"]
    assert "QEMU exited" in (factory.recent_failure(str(tmp_path / "tpl")) or "")
