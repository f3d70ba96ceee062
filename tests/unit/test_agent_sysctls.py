"""The agent's part of a spec's sysctls: net.* into the VM's namespace when the container
shares it, every key checked against the guest kernel first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pykata.agent.sysctls import apply_sysctls, sysctl_path, take_vm_sysctls
from pykata.domain.errors import BadValue

PORTS = "net.ipv4.ip_local_port_range"
SHM = "kernel.shm_rmid_forced"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for key in (PORTS, SHM, "net/ipv4/conf/eth0.100/forwarding"):
        path = Path(sysctl_path(key, str(tmp_path)))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("0\n")
    return tmp_path


def _spec(sysctl: dict[str, str], namespaces: list[dict[str, str]]) -> dict[str, Any]:
    return {"linux": {"sysctl": sysctl, "namespaces": namespaces}}


@pytest.mark.parametrize(("namespaces", "taken", "left"), [
    pytest.param([{"type": "ipc"}], {PORTS: "20000 30000"}, {SHM: "1"}, id="vm-netns"),
    pytest.param([{"type": "ipc"}, {"type": "network"}], {}, {PORTS: "20000 30000", SHM: "1"},
                 id="own-netns-runtime-sets-all"),
])
def test_net_sysctls_go_to_the_vm_when_the_container_shares_its_namespace(
        root: Path, namespaces: list[dict[str, str]], taken: dict[str, str],
        left: dict[str, str]) -> None:
    spec = _spec({PORTS: "20000 30000", SHM: "1"}, namespaces)
    assert take_vm_sysctls(spec, "c1", root=str(root)) == taken
    assert spec["linux"]["sysctl"] == left


def test_slash_keys_keep_their_dots(root: Path) -> None:
    key = "net/ipv4/conf/eth0.100/forwarding"
    assert take_vm_sysctls(_spec({key: "1"}, []), "c1", root=str(root)) == {key: "1"}


@pytest.mark.parametrize("key", ["net.ipv4.no_such_thing", "kernel.nope", "", "net/../../x"])
def test_a_sysctl_the_guest_lacks_is_named(root: Path, key: str) -> None:
    spec = _spec({key: "1", PORTS: "1 2"}, [])
    with pytest.raises(BadValue, match="the guest kernel has no such sysctl") as info:
        take_vm_sysctls(spec, "container 'c1' spec", root=str(root))
    assert repr(key) in str(info.value)
    assert spec["linux"]["sysctl"] == {key: "1", PORTS: "1 2"}  # nothing taken


def test_no_sysctls_is_nothing(root: Path) -> None:
    assert take_vm_sysctls({"linux": {}}, "c1", root=str(root)) == {}
    assert take_vm_sysctls({}, "c1", root=str(root)) == {}


def test_values_are_written(root: Path) -> None:
    apply_sysctls({PORTS: "20000 30000"}, "c1", str(root))
    assert Path(sysctl_path(PORTS, str(root))).read_text() == "20000 30000"


def test_a_refused_write_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(BadValue, match="net.ipv4.x=1"):
        apply_sysctls({"net.ipv4.x": "1"}, "c1", str(tmp_path))
