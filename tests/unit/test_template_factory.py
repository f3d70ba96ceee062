"""The template factory without a VM: a recent failed making of the same template sends
starts cold at once (no second boot to fail); an old one, another template's, or none lets
the next start try again."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from sandbox_fakes import file_ids

from pykata.domain.config import build_config
from pykata.domain.errors import VmmError
from pykata.domain.host import HostFacts
from pykata.plan.sandbox import SandboxRequest, plan_template_vm
from pykata.plan.template import (
    FAILED,
    RETRY_AFTER_S,
    TemplateKey,
    TemplatePlan,
    failure_blocks,
    template_key,
)
from pykata.sandbox import factory
from pykata.sandbox.request import template_failure

FACTS = HostFacts(frozenset(), False, "", False, online_cpus=2, mem_total_mib=8192)


def _plan(tmp_path: Path) -> tuple[TemplatePlan, Any]:
    cfg = build_config([("t", {"runtime": {"state_dir": str(tmp_path / "run")},
                               "factory": {"template_path": str(tmp_path / "tpl")}})])
    vm = plan_template_vm(cfg, SandboxRequest("x", cfg, FACTS))
    key = template_key(vm, file_ids())
    assert key is not None
    return TemplatePlan(vm, key), cfg


def _fail(tmp_path: Path, age: float, key: TemplateKey) -> None:
    (tmp_path / "tpl").mkdir(exist_ok=True)
    (tmp_path / "tpl" / FAILED).write_text(json.dumps(
        {"time": time.time() - age, "why": "agent did not come up", "key": key.to_json()}))


def test_a_recent_failure_fails_fast_and_names_why(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    plan, cfg = _plan(tmp_path)
    _fail(tmp_path, 5, plan.key)

    async def never(*_: object) -> None:
        raise AssertionError("made again despite the recent failure")

    monkeypatch.setattr(factory, "make_template", never)
    with pytest.raises(VmmError,
                       match=r"making the template failed \d+ s ago .*agent did not come up"):
        asyncio.run(factory.clone_ram(plan, cfg, str(tmp_path)))


@pytest.mark.parametrize(("age", "other"), [(RETRY_AFTER_S + 1, False), (None, False),
                                            (5, True)], ids=["old", "none", "another-key"])
def test_an_old_failure_or_none_tries_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            age: float | None, other: bool) -> None:
    plan, cfg = _plan(tmp_path)
    if age is not None:
        _fail(tmp_path, age, TemplateKey("q", "k", "i", "", "another vm") if other else plan.key)
    tried: list[str] = []

    async def make(p: TemplatePlan, c: Any) -> dict[str, Any]:
        tried.append(p.dir)
        raise VmmError("still no template")

    monkeypatch.setattr(factory, "make_template", make)
    with pytest.raises(VmmError, match="still no template"):
        asyncio.run(factory.clone_ram(plan, cfg, str(tmp_path)))
    assert tried == [str(tmp_path / "tpl")]


def test_template_failure_reads_only_a_good_record(tmp_path: Path) -> None:
    key = TemplateKey("q", "k", "i", "", "vm")
    assert template_failure(str(tmp_path)) is None
    (tmp_path / FAILED).write_text("not json")
    assert template_failure(str(tmp_path)) is None
    (tmp_path / FAILED).write_text(json.dumps({"time": time.time(), "why": "x"}))
    assert template_failure(str(tmp_path)) is None  # for no key: no template's
    (tmp_path / FAILED).write_text(json.dumps({"time": time.time(), "why": "x",
                                               "key": key.to_json()}))
    assert (failure_blocks(template_failure(str(tmp_path)), key) or "").endswith(": x")


def test_a_failed_making_is_recorded_and_leaves_no_half_template(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, cfg = _plan(tmp_path)

    async def boot_fails(*_: object) -> int:
        raise VmmError("template VM: agent did not come up: QEMU exited\nconsole: ...")

    monkeypatch.setattr(factory, "_boot_and_save", boot_fails)
    with pytest.raises(VmmError):
        asyncio.run(factory.make_template(plan, cfg))
    assert sorted(p.name for p in (tmp_path / "tpl").iterdir()) == [FAILED, "template.lock"]
    failure = template_failure(str(tmp_path / "tpl"))
    assert "QEMU exited" in (failure_blocks(failure, plan.key) or "")
