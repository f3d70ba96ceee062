"""Entering a network namespace: a bad path is an error that names it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pykata.domain.errors import NetworkError
from pykata.host.netns import in_netns
from pykata.sandbox.network import clear_network


def test_missing_namespace(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match=f"network namespace '{tmp_path}/nope': does not"):
        in_netns(str(tmp_path / "nope"), lambda: 1)


def test_a_file_is_not_a_namespace(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(NetworkError, match="'.*/f': is not a network namespace"):
        in_netns(str(tmp_path / "f"), lambda: 1)


@pytest.mark.skipif(os.geteuid() != 0, reason="setns needs CAP_SYS_ADMIN")
def test_errors_of_the_call_reach_the_caller() -> None:
    def fail() -> int:
        raise KeyError("x")

    with pytest.raises(KeyError):
        in_netns("/proc/self/ns/net", fail)
    assert in_netns("/proc/self/ns/net", lambda: 7) == 7


def test_no_record_nothing_to_clear(tmp_path: Path) -> None:
    assert clear_network(str(tmp_path)) == []
    (tmp_path / "network.json").write_text('{"netns": "/nonexistent", "links": ["eth0"], '
                                           '"taps": ["tap0_pykata"]}')
    assert clear_network(str(tmp_path)) == []  # the namespace went with everything in it
