"""The Task service and its sandbox: pods, runtime options, boot and create failures, a
dying agent or VM, stdin, and the whole-container calls; fakes from shim_fakes.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from shim_fakes import QEMU_PID, Shim, rpc_error, scenario

from pykata.domain.errors import (
    FAILED_PRECONDITION,
    INVALID_ARGUMENT,
    NOT_FOUND,
    PykataError,
)
from pykata.protocol.pb import shim_pb2 as pb
from pykata.sandbox.state import SandboxState
from pykata.shim.args import CONTAINER_TYPE, SANDBOX_ID
from pykata.shim.relay import VM_LOST_STATUS
from pykata.shim.service import METRICS_URL

POD = {CONTAINER_TYPE: "sandbox", SANDBOX_ID: "pod1"}


def _in(sandbox: str) -> dict[str, str]:
    return {CONTAINER_TYPE: "container", SANDBOX_ID: sandbox}


def test_pod_containers_share_the_sandbox(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        await shim.create("pod1", POD)
        await shim.create("c1", _in("pod1"))
        [boot] = shim.boots
        assert (boot.role.sandbox_id, boot.role.is_pod) == ("pod1", True)
        assert set(shim.sandbox.containers) == {"pod1", "c1"}
        await rpc_error(FAILED_PRECONDITION, shim.create("c2", _in("pod2")),
                        "task c2 belongs to sandbox pod2, this shim serves pod1")
        await rpc_error(FAILED_PRECONDITION, shim.create("c3"),
                        "task c3 belongs to sandbox c3")
        assert len(shim.service.tasks) == 2 and len(shim.boots) == 1
        await shim.delete("c1")
        await shim.service.Shutdown(pb.ShutdownRequest(id="c1"))
        assert not shim.service.shutdown_requested.is_set()  # pod1 remains
        assert shim.sandbox.stops == 0
    scenario(tmp_path, body)


def test_a_pod_is_resized_as_containers_come_change_and_go(tmp_path: Path) -> None:
    two_cpus = {"cpu": {"quota": 200000, "period": 100000},
                "memory": {"limit": 512 << 20}, "devices": []}
    async def body(shim: Shim) -> None:
        await shim.create("pod1", {**POD, "io.kubernetes.cri.sandbox-cpu-quota": "100000"},
                          resources={"cpu": {"shares": 2}})
        assert shim.sandbox.resizes == [], "the sandbox container sized the VM at boot"
        await shim.create("c1", _in("pod1"), resources=two_cpus)
        [[pause, c1]] = shim.sandbox.resizes
        assert (pause.vcpus, pause.memory_mib) == (0, 0)
        assert (c1.vcpus, c1.memory_mib) == (2, 512)
        update = pb.UpdateTaskRequest(id="c1")
        update.resources.value = b'{"cpu": {"quota": 100000, "period": 100000}}'
        await shim.service.Update(update)
        assert [(x.vcpus, x.memory_mib) for x in shim.sandbox.resizes[-1]] == [(0, 0), (1, 0)]
        await shim.service.Update(update)
        assert len(shim.sandbox.resizes) == 2, "the same limits again: no resize"
        await shim.delete("c1")
        assert [(x.vcpus, x.memory_mib) for x in shim.sandbox.resizes[-1]] == [(0, 0)]
    scenario(tmp_path, body)


@pytest.mark.parametrize(
    ("type_url", "config_path", "want"),
    [
        ("runtimeoptions.v1.Options", "/etc/pykata/pod.toml", "/etc/pykata/pod.toml"),
        ("type.googleapis.com/runtimeoptions.v1.Options", "/p.toml", "/p.toml"),
        ("runtimeoptions.v1.Options", "", "/etc/pykata.toml"),
        ("containerd.runc.v1.Options", "/ignored.toml", "/etc/pykata.toml"),
    ],
)
def test_runtime_options_name_the_config(tmp_path: Path, type_url: str, config_path: str,
                                         want: str) -> None:
    async def body(shim: Shim) -> None:
        req = pb.CreateTaskRequest(id="c1", bundle=shim.bundle("c1"))
        req.options.type_url = type_url
        req.options.value = pb.RuntimeOptions(config_path=config_path).SerializeToString()
        await shim.service.Create(req)
        assert [b.config_path for b in shim.boots] == [want]
    scenario(tmp_path, body)


def test_a_container_cannot_boot_its_pods_sandbox(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        await rpc_error(FAILED_PRECONDITION, shim.create("c1", _in("pod1")),
                        "its sandbox pod1 is not served by this shim")
        assert shim.boots == []
    scenario(tmp_path, body)


def test_agent_connection_dying_exits_with_255(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        await shim.create("c1")
        await shim.start("c1")
        shim.agent.lose()
        waited = await shim.wait("c1")
        assert waited.exit_status == VM_LOST_STATUS
        assert shim.events.topics == ["/tasks/create", "/tasks/start", "/tasks/exit"]
        assert shim.events.last("/tasks/exit").exit_status == VM_LOST_STATUS
    scenario(tmp_path, body)


def test_vm_dying_stops_the_sandbox_and_every_task_exits(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        await shim.create("pod1", POD)
        await shim.create("c1", _in("pod1"))
        await shim.start("c1")
        shim.sandbox.crash(status=137)
        for cid in ("pod1", "c1"):
            assert (await shim.wait(cid)).exit_status == VM_LOST_STATUS
        assert shim.sandbox.stops == 1
        await rpc_error(FAILED_PRECONDITION, shim.create("c2", _in("pod1")),
                        "sandbox pod1 is stopped")
        await rpc_error(FAILED_PRECONDITION, shim.service.Pids(pb.PidsRequest(id="c1")),
                        "the sandbox VM is not running")
        assert (await shim.delete("c1")).exit_status == VM_LOST_STATUS
        assert (await shim.delete("pod1")).exit_status == VM_LOST_STATUS
    scenario(tmp_path, body)


def test_create_failure_after_boot_leaves_nothing(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        shim.create_error = PykataError("guest: crun failed")
        with pytest.raises(PykataError, match="crun failed"):
            await shim.create("c1")
        await rpc_error(NOT_FOUND, shim.state("c1"))
        assert shim.sandbox.stops == 1
        assert shim.events.topics == []
        await shim.service.Shutdown(pb.ShutdownRequest(id="c1"))
        assert shim.service.shutdown_requested.is_set()
    scenario(tmp_path, body)


def test_create_with_unusable_stdio_removes_the_container(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        await rpc_error(INVALID_ARGUMENT, shim.create("c1", stdout=str(tmp_path)),
                        "not a FIFO")
        assert shim.agent.called("remove_container") == [("c1",)]
        assert shim.sandbox.containers == {}
        assert shim.sandbox.stops == 1
        await rpc_error(NOT_FOUND, shim.state("c1"))
    scenario(tmp_path, body)


def test_a_failed_create_in_a_pod_keeps_the_sandbox(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        await shim.create("pod1", POD)
        shim.sandbox.create_error = PykataError("guest: no such image")
        with pytest.raises(PykataError, match="no such image"):
            await shim.create("c1", _in("pod1"))
        assert shim.sandbox.stops == 0
        assert shim.sandbox.state is SandboxState.RUNNING
    scenario(tmp_path, body)


def test_boot_failure_leaves_no_task_and_allows_a_retry(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        shim.boot_error = PykataError("qemu: /dev/kvm: permission denied")
        with pytest.raises(PykataError, match="kvm"):
            await shim.create("c1")
        await rpc_error(NOT_FOUND, shim.state("c1"))
        shim.boot_error = None
        await shim.create("c1")
        assert len(shim.boots) == 2
    scenario(tmp_path, body)


def test_stdin_is_relayed_until_close_io(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        stdin = str(tmp_path / "stdin")
        os.mkfifo(stdin)
        await shim.create("c1", stdin=stdin)
        await shim.start("c1")
        client = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK)
        os.write(client, b"hello, container\n")
        os.close(client)
        await shim.service.CloseIO(pb.CloseIORequest(id="c1", stdin=True))
        proc = shim.agent.proc("c1")
        while not proc.stdin_closed:
            await asyncio.sleep(0.001)
        assert bytes(proc.stdin) == b"hello, container\n"
    scenario(tmp_path, body)


def test_container_operations(tmp_path: Path) -> None:
    async def body(shim: Shim) -> None:
        await shim.create("c1", terminal=True)
        svc = shim.service
        pids = await svc.Pids(pb.PidsRequest(id="c1"))
        assert [p.pid for p in pids.processes] == [1, 7]
        await svc.ResizePty(pb.ResizePtyRequest(id="c1", width=80, height=24))
        assert shim.agent.called("tty_win_resize") == [("c1", "", 24, 80)]
        await rpc_error(FAILED_PRECONDITION, svc.Pause(pb.PauseRequest(id="c1")),
                        "Pause needs running")
        await shim.start("c1")
        await svc.Pause(pb.PauseRequest(id="c1"))
        assert (await shim.state("c1")).status == pb.PAUSED
        await rpc_error(FAILED_PRECONDITION, shim.exec("c1", "e1"))
        await svc.Resume(pb.ResumeRequest(id="c1"))
        assert (await shim.state("c1")).status == pb.RUNNING
        update = pb.UpdateTaskRequest(id="c1")
        update.resources.value = b'{"cpu": {"quota": 50000, "period": 100000}}'
        await svc.Update(update)
        assert shim.agent.called("update_container") == \
            [("c1", {"cpu": {"quota": 50000, "period": 100000}})]
        assert svc.tasks.get("Update", "c1").resources == {"cpu": {"quota": 50000,
                                                                  "period": 100000}}
        for bad, why in [(b"{", "not JSON"), (b"[1]", "not a JSON object")]:
            update.resources.value = bad
            await rpc_error(INVALID_ARGUMENT, svc.Update(update), why)
        stats = await svc.Stats(pb.StatsRequest(id="c1"))
        assert stats.stats.type_url == METRICS_URL
        assert pb.ProcessInfo.FromString(stats.stats.value).pid == 42
        connected = await svc.Connect(pb.ConnectRequest(id="c1"))
        assert (connected.shim_pid, connected.task_pid) == (os.getpid(), QEMU_PID)
        assert shim.events.topics == ["/tasks/create", "/tasks/start", "/tasks/paused",
                                      "/tasks/resumed"]
    scenario(tmp_path, body)
