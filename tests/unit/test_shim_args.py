"""The shim's command line, pod roles and socket names: pure functions, tables of cases."""

from __future__ import annotations

import pytest

from pykata.domain.errors import PykataError, UsageError
from pykata.shim.args import (
    CONTAINER_TYPE,
    MAX_SOCKET_PATH,
    SANDBOX_ID,
    PodRole,
    ShimArgs,
    parse_args,
    pod_role,
    socket_path,
)

BASE = ["-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
        "-publish-binary", "/usr/bin/containerd"]


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        pytest.param(
            [*BASE, "-id", "c1", "start"],
            ShimArgs(action="start", namespace="k8s.io",
                     address="/run/containerd/containerd.sock",
                     publish_binary="/usr/bin/containerd", id="c1"),
            id="containerd-start"),
        pytest.param(
            [*BASE, "-id", "c1", "-debug", "start"],
            ShimArgs(action="start", namespace="k8s.io",
                     address="/run/containerd/containerd.sock",
                     publish_binary="/usr/bin/containerd", id="c1", debug=True),
            id="debug"),
        pytest.param(
            ["-namespace=default", "--address=/a.sock", "-id=c2", "-bundle", "/b", "delete"],
            ShimArgs(action="delete", namespace="default", address="/a.sock", id="c2",
                     bundle="/b"),
            id="equals-and-double-dash"),
        pytest.param(
            ["-id", "c1", "-debug=true", "start"],
            ShimArgs(action="start", id="c1", debug=True), id="debug-equals-true"),
        pytest.param(
            ["-id", "c1", "-debug=false", "start"],
            ShimArgs(action="start", id="c1"), id="debug-equals-false"),
        pytest.param(
            ["start", "-id", "c1"], ShimArgs(action="start", id="c1"), id="action-first"),
        pytest.param(
            ["-id", "c1", "-socket", "/s.sock", "start"], ShimArgs(action="start", id="c1"),
            id="socket-flag-accepted"),
        pytest.param(["-v"], ShimArgs(action="", version=True), id="version"),
        pytest.param(["-v", "-id", "c1", "bogus"], ShimArgs(action="", version=True),
                     id="version-wins"),
    ],
)
def test_parse_args(argv: list[str], want: ShimArgs) -> None:
    assert parse_args(argv) == want


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param([*BASE, "start"], "flag -id is required", id="missing-id"),
        pytest.param(["-id", "", "start"], "flag -id is required", id="empty-id"),
        pytest.param(["-id", "c1", "-frobnicate", "start"], "unknown flag '-frobnicate'",
                     id="unknown-flag"),
        pytest.param(["-id", "c1", "start", "delete"], r"one action of start, delete",
                     id="two-actions"),
        pytest.param(["-id", "c1"], r"got \[\]", id="no-action"),
        pytest.param(["-id", "c1", "run"], r"got \['run'\]", id="bad-action"),
        pytest.param(["start", "-id"], "flag -id needs a value", id="value-missing"),
    ],
)
def test_parse_args_refuses(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_args(argv)


@pytest.mark.parametrize(
    ("task_id", "annotations", "want"),
    [
        pytest.param("pod1", {CONTAINER_TYPE: "sandbox", SANDBOX_ID: "pod1"},
                     PodRole("pod1", is_sandbox=True, is_pod=True), id="cri-sandbox"),
        pytest.param("c1", {CONTAINER_TYPE: "container", SANDBOX_ID: "pod1"},
                     PodRole("pod1", is_sandbox=False, is_pod=True), id="cri-container"),
        pytest.param("c1", {}, PodRole("c1", is_sandbox=True, is_pod=False), id="ctr-run"),
        pytest.param("c1", {"org.example/other": "x"},
                     PodRole("c1", is_sandbox=True, is_pod=False), id="unrelated-annotations"),
    ],
)
def test_pod_role(task_id: str, annotations: dict[str, str], want: PodRole) -> None:
    assert pod_role(task_id, annotations) == want


def test_pod_role_container_needs_its_sandbox_id() -> None:
    with pytest.raises(PykataError, match=f"task c1: .*without {SANDBOX_ID}"):
        pod_role("c1", {CONTAINER_TYPE: "container"})


ADDR, NS, SB = "/run/containerd/containerd.sock", "default", "pod1"


def test_socket_path_is_stable_and_under_the_directory() -> None:
    path = socket_path("/run/pykata/", ADDR, NS, SB)
    assert path == socket_path("/run/pykata", ADDR, NS, SB)
    assert path.startswith("/run/pykata/s/") and path.endswith(".sock")
    assert len(path.encode()) <= MAX_SOCKET_PATH


@pytest.mark.parametrize(
    ("address", "namespace", "sandbox"),
    [
        pytest.param("/other/containerd.sock", NS, SB, id="address"),
        pytest.param(ADDR, "k8s.io", SB, id="namespace"),
        pytest.param(ADDR, NS, "pod2", id="sandbox"),
        # The separator keeps ("a", "bc") and ("ab", "c") apart.
        pytest.param(ADDR, NS + "p", "od1", id="field-boundary"),
    ],
)
def test_socket_path_differs(address: str, namespace: str, sandbox: str) -> None:
    assert socket_path("/run/pykata", address, namespace, sandbox) != \
        socket_path("/run/pykata", ADDR, NS, SB)


def test_socket_path_too_long_names_the_path() -> None:
    directory = "/" + "d" * 80
    with pytest.raises(PykataError, match=f"'{directory}/s/[0-9a-f]{{32}}.sock' is longer "
                                          f"than {MAX_SOCKET_PATH} bytes"):
        socket_path(directory, ADDR, NS, SB)
