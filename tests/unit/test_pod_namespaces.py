"""A pod member's namespaces: planned on the host (the sandbox container's namespaces named
by their /proc path under QEMU's pid), resolved by the agent to the sandbox container's
init in the guest."""

from __future__ import annotations

from typing import Any

import pytest

from pykata.agent.bundle import resolve_namespaces
from pykata.domain.contract import container_ns_path, parse_container_ns_path
from pykata.domain.errors import SpecError
from pykata.plan.guest_spec import PodNamespaces, check_host_namespaces, plan_guest_spec

POD = PodNamespaces(host_pid=4242, sandbox_container="pause1")


def _spec(namespaces: list[dict[str, str]]) -> dict[str, Any]:
    return {"root": {"path": "rootfs"}, "process": {"args": ["sh"]},
            "linux": {"namespaces": namespaces}}


@pytest.mark.parametrize(("namespaces", "vm_netns", "expected", "warnings"), [
    pytest.param(
        [{"type": "ipc", "path": "/proc/4242/ns/ipc"}, {"type": "uts", "path": "/proc/4242/ns/uts"},
         {"type": "pid", "path": "/proc/4242/ns/pid"}, {"type": "mount"}],
        False,
        [{"type": "ipc", "path": container_ns_path("pause1", "ipc")},
         {"type": "uts", "path": container_ns_path("pause1", "uts")},
         {"type": "pid", "path": container_ns_path("pause1", "pid")}, {"type": "mount"}],
        0, id="cri-pod-mode"),
    pytest.param(
        [{"type": "network", "path": "/proc/4242/ns/net"}, {"type": "pid"}], True,
        [{"type": "pid"}], 0, id="pod-network-is-the-vms"),
    pytest.param(
        [{"type": "network", "path": "/proc/4242/ns/net"}], False,
        [{"type": "network", "path": container_ns_path("pause1", "network")}], 0,
        id="no-pod-network-joins-the-sandbox-containers"),
    pytest.param(
        [{"type": "ipc", "path": "/proc/99/ns/ipc"}], False, [{"type": "ipc"}], 1,
        id="another-process-is-a-host-path"),
    pytest.param(
        [{"type": "ipc", "path": "/proc/4242/ns/uts"}], False, [{"type": "ipc"}], 1,
        id="wrong-file-for-the-type"),
])
def test_member_joins_the_sandbox_containers_namespaces(
        namespaces: list[dict[str, str]], vm_netns: bool, expected: list[dict[str, str]],
        warnings: int) -> None:
    guest = plan_guest_spec(_spec(namespaces), "c1", vm_netns=vm_netns, pod=POD)
    assert guest.doc["linux"]["namespaces"] == expected
    assert len(guest.warnings) == warnings


def test_without_a_pod_every_path_is_a_host_path() -> None:
    guest = plan_guest_spec(_spec([{"type": "ipc", "path": "/proc/4242/ns/ipc"}]), "c1")
    assert guest.doc["linux"]["namespaces"] == [{"type": "ipc"}]
    assert "host path" in guest.warnings[0]


@pytest.mark.parametrize(("path", "parsed"), [
    (container_ns_path("pause1", "pid"), ("pause1", "pid")),
    ("/run/pykata/containers/pause1/ns/bogus", None),
    ("/run/pykata/containers//ns/pid", None),
    ("/proc/1/ns/pid", None),
])
def test_contract_paths_parse(path: str, parsed: tuple[str, str] | None) -> None:
    assert parse_container_ns_path(path) == parsed


def test_agent_resolves_a_container_namespace_to_its_init() -> None:
    spec = _spec([{"type": "ipc", "path": container_ns_path("pause1", "ipc")},
                  {"type": "network", "path": container_ns_path("pause1", "network")},
                  {"type": "uts"}])
    resolve_namespaces("spec", spec, {"pause1": 77}.__getitem__)
    assert spec["linux"]["namespaces"] == [{"type": "ipc", "path": "/proc/77/ns/ipc"},
                                           {"type": "network", "path": "/proc/77/ns/net"},
                                           {"type": "uts"}]


def test_agent_refuses_a_namespace_named_for_another_type() -> None:
    spec = _spec([{"type": "pid", "path": container_ns_path("pause1", "ipc")}])
    with pytest.raises(SpecError, match="is a ipc namespace, named for 'pid'"):
        resolve_namespaces("spec", spec, lambda cid: 1)


ALL = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]


@pytest.mark.parametrize(("dropped", "named"), [
    (["network"], ["network (hostNetwork)"]),
    (["pid", "ipc"], ["pid (hostPID)", "ipc (hostIPC)"]),
])
def test_host_namespaces_are_refused_by_name(dropped: list[str], named: list[str]) -> None:
    doc = {"linux": {"namespaces": [ns for ns in ALL if ns["type"] not in dropped]}}
    with pytest.raises(SpecError) as info:
        check_host_namespaces(doc, allow=False, source="config.json")
    message = str(info.value)
    assert all(n in message for n in named), message
    assert "allow_host_namespaces" in message
    warnings = check_host_namespaces(doc, allow=True, source="config.json")
    assert len(warnings) == 1 and all(n in warnings[0] for n in named)


def test_own_namespaces_pass() -> None:
    assert check_host_namespaces({"linux": {"namespaces": ALL}}, False, "config.json") == []
    assert check_host_namespaces({"linux": {"namespaces": ALL[:3] + [
        {"type": "network", "path": "/var/run/netns/x"}]}}, False, "config.json") == []
