"""One id rule for host and agent: ids that would escape or break a path are refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pykata.agent.registry import check_id as agent_check_id
from pykata.domain.config import build_config
from pykata.domain.errors import BadValue, IdError, shown
from pykata.domain.host import HostFacts
from pykata.domain.ids import MAX_ID_LEN, check_id, id_problem
from pykata.domain.spec import default_spec, parse_spec
from pykata.sandbox.sandbox import Sandbox
from pykata.sandbox.state import SandboxState

GOOD = ["c1", "a" * MAX_ID_LEN, "x.y_z-1+2", "0" * 64, "9"]
BAD = ["", "/", "a/b", "../x", "..", "a..b", ".hidden", "a\0b", "a" * (MAX_ID_LEN + 1),
       "a" * 257, "a b", "a\nb", "\u00e9t\u00e9", "\uff11", "-x", "_x"]
BAD_IDS = ["empty", "slash", "inner-slash", "dotdot-slash", "dotdot", "inner-dotdot", "dot",
           "nul", "129", "257", "space", "newline", "non-ascii", "fullwidth-digit", "dash",
           "underscore"]


@pytest.mark.parametrize("ident", GOOD)
def test_good_ids(ident: str) -> None:
    assert id_problem(ident) is None
    assert check_id("container id", ident) == ident
    assert agent_check_id("container_id", ident) == ident


@pytest.mark.parametrize("ident", BAD, ids=BAD_IDS)
def test_bad_ids_are_refused_by_host_and_agent_alike(ident: str) -> None:
    assert id_problem(ident) is not None
    with pytest.raises(IdError, match="^exec id "):
        check_id("exec id", ident)
    with pytest.raises(BadValue, match="exec_id"):
        agent_check_id("exec_id", ident)


def test_non_strings_are_refused() -> None:
    assert id_problem(5) == "must be a string, got int"


def test_messages_do_not_repeat_a_huge_id() -> None:
    with pytest.raises(IdError) as err:
        check_id("container id", "a" * 100_000)
    assert len(str(err.value)) < 200
    assert len(shown("b" * 1000)) == 80


def _facts() -> HostFacts:
    return HostFacts(frozenset(), False, "", False, online_cpus=2, mem_total_mib=4096)


def test_sandbox_refuses_a_bad_sandbox_id(tmp_path: Path) -> None:
    cfg = build_config([("t", {"runtime": {"state_dir": str(tmp_path)}})])
    with pytest.raises(IdError, match="sandbox id '../../etc'"):
        Sandbox.from_parts(cfg, _facts(), "../../etc")


@pytest.mark.parametrize("cid", ["../../escape", "a/b", "x\0y", ".."])
def test_sandbox_refuses_a_bad_container_id_before_building_a_path(tmp_path: Path,
                                                                    cid: str) -> None:
    cfg = build_config([("t", {"runtime": {"state_dir": str(tmp_path / "state")}})])
    sandbox = Sandbox.from_parts(cfg, _facts(), "sb1")
    sandbox.state = SandboxState.RUNNING  # as after start(); nothing else is touched
    spec = parse_spec(default_spec(["true"]), "test")
    with pytest.raises(IdError, match="container id"):
        asyncio.run(sandbox.create_container(cid, spec, str(tmp_path)))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
