"""Bad input to the agent's handlers: unknown ids, malformed values, calls out of order,
a failing runtime. Each error names the bad id or value (see test_agent_service for the
harness: real OCI runtime, busybox rootfs, handler table called directly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf.message import Message
from test_agent_service import (
    Client,
    Scenario,
    container_spec,
    failure,
    make_rootfs,
    require_runtime,
    run_agent,
)

from pykata.protocol.pb import agent_pb2 as pb


def _run(tmp_path: Path, scenario: Scenario) -> None:
    run_agent(tmp_path, require_runtime(), scenario)


def test_runtime_failure_is_internal_and_frees_the_id(
        tmp_path: Path) -> None:
    rootfs = str(make_rootfs(tmp_path / "rootfs"))

    async def scenario(call: Client) -> None:
        code, msg = await failure(call.run("c6", container_spec(rootfs, "/no/such/binary")))
        assert code == "INTERNAL" and "/no/such/binary" in msg, msg
        await call.run("c6", container_spec(rootfs, "true"))
        assert (await call("WaitProcess", pb.WaitProcessRequest(container_id="c6"))).status == 0

    _run(tmp_path, scenario)


# ---- bad input -----------------------------------------------------------------------

UNKNOWN = [
    ("StartContainer", pb.StartContainerRequest(container_id="nope")),
    ("RemoveContainer", pb.RemoveContainerRequest(container_id="nope")),
    ("SignalProcess", pb.SignalProcessRequest(container_id="nope", signal=9)),
    ("WaitProcess", pb.WaitProcessRequest(container_id="nope")),
    ("ReadStdout", pb.ReadStreamRequest(container_id="nope", len=1)),
    ("ReadStderr", pb.ReadStreamRequest(container_id="nope", len=1)),
    ("WriteStdin", pb.WriteStreamRequest(container_id="nope", data=b"x")),
    ("CloseStdin", pb.CloseStdinRequest(container_id="nope")),
    ("ExecProcess", pb.ExecProcessRequest(container_id="nope", exec_id="e",
                                          process_json=b'{"args": ["true"]}')),
    ("WaitProcess", pb.WaitProcessRequest(container_id="live", exec_id="nope")),
    ("SignalProcess", pb.SignalProcessRequest(container_id="live", exec_id="nope", signal=9)),
    ("ReadStdout", pb.ReadStreamRequest(container_id="live", exec_id="nope", len=1)),
    ("TtyWinResize", pb.TtyWinResizeRequest(container_id="nope", row=1, column=1)),
    ("TtyWinResize", pb.TtyWinResizeRequest(container_id="live", exec_id="nope", row=1)),
    ("PauseContainer", pb.PauseContainerRequest(container_id="nope")),
    ("ResumeContainer", pb.ResumeContainerRequest(container_id="nope")),
    ("ListProcesses", pb.ListProcessesRequest(container_id="nope")),
    ("StatsContainer", pb.StatsContainerRequest(container_id="nope")),
    ("UpdateContainer", pb.UpdateContainerRequest(container_id="nope", resources_json=b"{}")),
    ("SignalProcess", pb.SignalProcessRequest(container_id="nope", signal=9, all=True)),
]


@pytest.mark.parametrize(("method", "request_"), UNKNOWN,
                         ids=[f"{m}-{'exec' if 'live' in str(r) else 'container'}"
                              for m, r in UNKNOWN])
def test_unknown_ids_are_not_found(tmp_path: Path,
                                   method: str, request_: Message) -> None:
    rootfs = str(make_rootfs(tmp_path / "rootfs"))

    async def scenario(call: Client) -> None:
        if "live" in str(request_):
            await call("CreateContainer", pb.CreateContainerRequest(
                container_id="live", oci_spec_json=json.dumps(
                    container_spec(rootfs, "true")).encode()))
        code, msg = await failure(call(method, request_))
        assert code == "NOT_FOUND" and "'nope'" in msg, msg

    _run(tmp_path, scenario)


BAD_INPUT = [
    ("bad-container-id", "CreateContainer", pb.CreateContainerRequest(
        container_id="../etc", oci_spec_json=b"{}"), "INVALID_ARGUMENT", "../etc"),
    ("spec-not-json", "CreateContainer", pb.CreateContainerRequest(
        container_id="x", oci_spec_json=b"{nope"), "INVALID_ARGUMENT", "not JSON"),
    ("spec-no-args", "CreateContainer", pb.CreateContainerRequest(
        container_id="x", oci_spec_json=b'{"process": {"args": []}, "root": {"path": "r"}}'),
     "INVALID_ARGUMENT", "process.args"),
    ("missing-rootfs", "CreateContainer", pb.CreateContainerRequest(
        container_id="x", oci_spec_json=json.dumps(container_spec("/no/rootfs", "true"))
        .encode()), "INVALID_ARGUMENT", "/no/rootfs"),
    ("start-twice", "StartContainer", pb.StartContainerRequest(container_id="live"),
     "FAILED_PRECONDITION", "requires created"),
    ("duplicate", "CreateContainer", pb.CreateContainerRequest(
        container_id="live", oci_spec_json=b'{"process": {"args": ["x"]}, "root": {"path": "r"}}'),
     "ALREADY_EXISTS", "'live'"),
    ("len-zero", "ReadStdout", pb.ReadStreamRequest(container_id="live", len=0),
     "INVALID_ARGUMENT", "len"),
    ("signal-zero", "SignalProcess", pb.SignalProcessRequest(container_id="live", signal=0),
     "INVALID_ARGUMENT", "signal"),
    ("bad-exec-id", "ExecProcess", pb.ExecProcessRequest(
        container_id="live", exec_id="a/b", process_json=b'{"args": ["x"]}'),
     "INVALID_ARGUMENT", "a/b"),
    ("resume-running", "ResumeContainer", pb.ResumeContainerRequest(container_id="live"),
     "FAILED_PRECONDITION", "state is running, requires paused"),
    ("resources-not-json", "UpdateContainer", pb.UpdateContainerRequest(
        container_id="live", resources_json=b"{x"), "INVALID_ARGUMENT", "resources_json"),
    ("window-too-wide", "TtyWinResize", pb.TtyWinResizeRequest(
        container_id="live", row=1, column=70000), "INVALID_ARGUMENT", "column"),
    ("bad-hostname", "CreateSandbox", pb.CreateSandboxRequest(hostname="a b"),
     "INVALID_ARGUMENT", "a b"),
    ("bad-storage-driver", "CreateSandbox", pb.CreateSandboxRequest(storages=[pb.Storage(
        driver="9p", source="x", mount_point="/m")]), "INVALID_ARGUMENT", "9p"),
]


@pytest.mark.parametrize(("method", "request_", "code", "named"),
                         [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT])
def test_bad_input_is_refused_naming_the_value(
        tmp_path: Path, method: str, request_: Message,
        code: str, named: str) -> None:
    rootfs = str(make_rootfs(tmp_path / "rootfs"))

    async def scenario(call: Client) -> None:
        if 'container_id: "live"' in str(request_):
            # Started, so starting it again is out of order.
            await call.run("live", container_spec(rootfs, "sleep", "100"))
        got, msg = await failure(call(method, request_))
        assert (got, named in msg) == (code, True), msg

    _run(tmp_path, scenario)


def test_exec_needs_a_running_container(tmp_path: Path) -> None:
    rootfs = str(make_rootfs(tmp_path / "rootfs"))

    async def scenario(call: Client) -> None:
        await call("CreateContainer", pb.CreateContainerRequest(
            container_id="c7", oci_spec_json=json.dumps(container_spec(rootfs, "true")).encode()))
        code, msg = await failure(call("ExecProcess", pb.ExecProcessRequest(
            container_id="c7", exec_id="e", process_json=b'{"args": ["true"], "cwd": "/"}')))
        assert code == "FAILED_PRECONDITION" and "state is created, requires running" in msg

    _run(tmp_path, scenario)
