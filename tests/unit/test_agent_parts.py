"""The agent's parts one by one: state table, spec and storage checks, parsers, config,
runtime argv and logs, the reaper and the stdio pipes (real processes, no runtime)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from pykata.agent import linux
from pykata.agent.bundle import prepare_process, prepare_spec, wants_terminal
from pykata.agent.config import AgentConfig, parse_config
from pykata.agent.guest import parse_block_size, parse_cpu_list, parse_mem_total
from pykata.agent.hotplug import apply_online, plan_online
from pykata.agent.reaper import Reaper, exit_code
from pykata.agent.registry import TRANSITIONS, Container, Event, State, check_id
from pykata.agent.runtime import log_messages, runtime_argv
from pykata.agent.stdio import PipeReader, PipeWriter
from pykata.agent.storage import MountPlan, Storage, plan_mount
from pykata.agent.transport import find_port
from pykata.domain.errors import BadValue, ConfigError, SpecError, StateError

# ---- state table ----------------------------------------------------------------------

LIFECYCLES = [
    ("run-exit-remove", [Event.CREATED, Event.START, Event.STARTED, Event.EXITED, Event.REMOVE],
     State.REMOVING),
    ("exit-during-start", [Event.CREATED, Event.START, Event.EXITED], State.STOPPED),
    ("start-failed", [Event.CREATED, Event.START, Event.START_FAILED], State.CREATED),
    ("remove-created", [Event.CREATED, Event.REMOVE], State.REMOVING),
    ("pause-resume", [Event.CREATED, Event.START, Event.STARTED, Event.PAUSE, Event.RESUME],
     State.RUNNING),
    ("pause-failed", [Event.CREATED, Event.START, Event.STARTED, Event.PAUSE,
                      Event.PAUSE_FAILED], State.RUNNING),
    ("resume-failed", [Event.CREATED, Event.START, Event.STARTED, Event.PAUSE, Event.RESUME,
                       Event.RESUME_FAILED], State.PAUSED),
    ("killed-while-paused", [Event.CREATED, Event.START, Event.STARTED, Event.PAUSE,
                             Event.EXITED], State.STOPPED),
    ("remove-paused", [Event.CREATED, Event.START, Event.STARTED, Event.PAUSE, Event.REMOVE],
     State.REMOVING),
]


@pytest.mark.parametrize(("events", "final"), [c[1:] for c in LIFECYCLES],
                         ids=[c[0] for c in LIFECYCLES])
def test_allowed_lifecycles(events: list[Event], final: State) -> None:
    c = Container("c", "/b")
    for event in events:
        c.advance(event)
    assert c.state is final


REFUSED = [
    ("start-before-create", State.CREATING, Event.START, "requires created"),
    ("start-twice", State.RUNNING, Event.START, "state is running"),
    ("remove-while-starting", State.STARTING, Event.REMOVE,
     "created or paused or running or stopped"),
    ("remove-twice", State.REMOVING, Event.REMOVE, "state is removing"),
    ("pause-stopped", State.STOPPED, Event.PAUSE, "state is stopped, requires running"),
    ("pause-twice", State.PAUSED, Event.PAUSE, "state is paused, requires running"),
    ("resume-running", State.RUNNING, Event.RESUME, "state is running, requires paused"),
    ("pause-created", State.CREATED, Event.PAUSE, "requires running"),
]


@pytest.mark.parametrize(("state", "event", "says"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_refused_transitions_name_state_and_requirement(state: State, event: Event,
                                                        says: str) -> None:
    c = Container("c9", "/b", state=state)
    with pytest.raises(StateError, match=says) as info:
        c.advance(event)
    assert "'c9'" in str(info.value) and c.state is state


def test_every_state_but_removing_is_reachable_and_leaves() -> None:
    sources = {s for s, _ in TRANSITIONS}
    targets = set(TRANSITIONS.values())
    assert set(State) - {State.CREATING} <= targets
    assert set(State) <= sources


def test_abort_remove_restores_the_state() -> None:
    c = Container("c", "/b", state=State.RUNNING)
    c.advance(Event.REMOVE)
    c.abort_remove()
    assert c.state is State.RUNNING


def test_an_exit_not_yet_applied_already_counts() -> None:
    """The init's exit future is set, its state callback has not run yet: a call that saw
    the exit (WaitProcess answers at once) finds the container stopped, not running."""
    from pykata.agent.registry import Process
    from pykata.domain.errors import StateError

    async def scenario() -> None:
        exit_code: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        c = Container("c", "/b", state=State.RUNNING)
        c.init = Process("", 1, None, exit_code)  # type: ignore[arg-type]
        c.require("signal")
        exit_code.set_result(0)
        with pytest.raises(StateError, match="state is stopped"):
            c.require("signal")
        assert c.state is State.STOPPED

    asyncio.run(scenario())


@pytest.mark.parametrize("ident", ["c1", "a" * 128, "x.y_z-1+2"], ids=["plain", "max", "punct"])
def test_good_ids(ident: str) -> None:
    assert check_id("container_id", ident) == ident


@pytest.mark.parametrize("ident", ["", "../x", "a/b", ".hidden", "a" * 129, "a b"],
                         ids=["empty", "dotdot", "slash", "dot", "long", "space"])
def test_bad_ids(ident: str) -> None:
    with pytest.raises(BadValue, match="container_id"):
        check_id("container_id", ident)


# ---- spec, storage ----------------------------------------------------------------------


def _spec(**overrides: Any) -> bytes:
    doc: dict[str, Any] = {"process": {"args": ["sh"], "terminal": True},
                           "root": {"path": "rootfs"}}
    doc.update(overrides)
    return json.dumps(doc).encode()


def test_prepare_spec_roots_relative_paths_in_the_share_and_keeps_the_terminal() -> None:
    spec = prepare_spec("c1", _spec(), "/run/pykata/shared")
    assert spec["root"]["path"] == "/run/pykata/shared/c1/rootfs"
    assert spec["process"]["terminal"] is True and wants_terminal(spec["process"])
    assert not wants_terminal(prepare_process("c1", "e1", b'{"args": ["sh"]}'))
    absolute = prepare_spec("c1", _spec(root={"path": "/elsewhere"}), "/s")
    assert absolute["root"]["path"] == "/elsewhere"


BAD_SPECS = [
    ("not-json", b"{", "not JSON"),
    ("array", b"[]", "JSON object"),
    ("no-process", json.dumps({"root": {"path": "r"}}).encode(), "process"),
    ("args-not-strings", _spec(process={"args": [1]}), "process.args"),
    ("terminal-not-bool", _spec(process={"args": ["sh"], "terminal": "yes"}),
     "process.terminal"),
    ("no-root", _spec(root=None), "root.path"),
]


@pytest.mark.parametrize(("data", "says"), [c[1:] for c in BAD_SPECS],
                         ids=[c[0] for c in BAD_SPECS])
def test_bad_specs(data: bytes, says: str) -> None:
    with pytest.raises(SpecError, match=says) as info:
        prepare_spec("c1", data, "/s")
    assert "'c1'" in str(info.value)


def test_prepare_process_names_the_exec() -> None:
    with pytest.raises(SpecError, match="exec 'e1' in container 'c1'"):
        prepare_process("c1", "e1", b'{"args": []}')


def test_plan_virtiofs_mount() -> None:
    plan = plan_mount(Storage("virtiofs", "pykatafs", "", ("rw", "nodev", "dax"), "/run/x/"))
    assert plan == MountPlan("pykatafs", "/run/x", "virtiofs", linux.MS_NODEV, "dax")


BAD_STORAGES = [
    ("driver", Storage("9p", "t", "", (), "/m"), "storage.driver"),
    ("fstype", Storage("virtiofs", "t", "ext4", (), "/m"), "storage.fstype"),
    ("no-tag", Storage("virtiofs", "", "", (), "/m"), "storage.source"),
    ("relative", Storage("virtiofs", "t", "", (), "m"), "storage.mount_point"),
    ("dotdot", Storage("virtiofs", "t", "", (), "/m/../etc"), "storage.mount_point"),
]


@pytest.mark.parametrize(("storage", "says"), [c[1:] for c in BAD_STORAGES],
                         ids=[c[0] for c in BAD_STORAGES])
def test_bad_storages(storage: Storage, says: str) -> None:
    with pytest.raises(BadValue, match=says):
        plan_mount(storage)


# ---- guest facts, config, runtime --------------------------------------------------------


@pytest.mark.parametrize(("text", "count"), [("0\n", 1), ("0-3\n", 4), ("0-3,6,8-9", 7)],
                         ids=["one", "range", "mixed"])
def test_parse_cpu_list(text: str, count: int) -> None:
    assert parse_cpu_list(text) == count


def test_parse_block_size_and_meminfo() -> None:
    assert parse_block_size("8000000\n") == 128 << 20
    assert parse_mem_total("MemFree: 1 kB\nMemTotal:  2048 kB\n") == 2 << 20


def test_parse_config_keeps_defaults_and_ignores_unknown_keys() -> None:
    config = parse_config('{"modules": ["/a.ko", "/b.ko"], "future": 1}')
    assert config == AgentConfig(modules=("/a.ko", "/b.ko"))


@pytest.mark.parametrize(("text", "key"), [
    ("[]", "<document>"), ('{"modules": "/a.ko"}', "modules"),
    ('{"oci_runtime": ""}', "oci_runtime"), ('{"vsock_port": true}', "vsock_port"),
], ids=["array", "modules-string", "empty-runtime", "bool-port"])
def test_parse_config_refuses(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_config(text, "agent.json")


def test_runtime_argv() -> None:
    assert runtime_argv("/usr/bin/crun", "/run/r", "/b/l", ["start", "c1"]) == [
        "/usr/bin/crun", "--root", "/run/r", "--log", "/b/l", "--log-format", "json",
        "start", "c1"]
    assert runtime_argv("crun", None, "l", ["x"])[:2] == ["crun", "--log"]


def test_log_messages_keeps_errors() -> None:
    text = ('{"level":"warning","msg":"meh"}\n{"level":"error","msg":"boom: no such file"}\n'
            "raw line\n")
    assert log_messages(text) == "boom: no such file; raw line"
    assert log_messages("") == "(nothing logged)"


# ---- reaper, pipes, port discovery -------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [(3 << 8, 3), (9, 137), (15, 143)],
                         ids=["exit-3", "sigkill", "sigterm"])
def test_exit_code(status: int, code: int) -> None:
    assert exit_code(status) == code


def test_reaper_collects_spawned_and_early_statuses() -> None:
    async def main() -> None:
        reaper = Reaper(asyncio.get_running_loop())
        reaper.install()
        try:
            null = os.open(os.devnull, os.O_RDWR)
            _, done = reaper.spawn(["/bin/sh", "-c", "exit 5"], (null,) * 3)
            pid, killed = reaper.spawn(["/bin/sleep", "10"], (null,) * 3)
            os.kill(pid, signal.SIGKILL)
            # An orphan-like child nobody watches yet: its status waits for `watch`.
            early = os.posix_spawn("/bin/true", ["true"], {})
            os.close(null)
            assert (await done, await killed) == (5, 137)
            for _ in range(100):
                if early in reaper._unclaimed:
                    break
                await asyncio.sleep(0.01)
            assert await reaper.watch(early) == 0
        finally:
            reaper.close()

    asyncio.run(main())


def test_pipe_read_long_polls_and_close_wakes_readers() -> None:
    async def main() -> None:
        r, w = os.pipe()
        reader, writer = PipeReader(r), PipeWriter(w)
        pending = asyncio.ensure_future(reader.read(10))
        await asyncio.sleep(0.01)
        assert not pending.done()
        assert await writer.write(b"abc") == 3
        assert await pending == b"abc"
        await writer.close()
        assert await reader.read(10) == b""  # EOF
        r2, w2 = os.pipe()
        reader2 = PipeReader(r2)
        parked = asyncio.ensure_future(reader2.read(10))
        await asyncio.sleep(0.01)
        reader2.close()
        assert await parked == b""
        os.close(w2)
        reader.close()

    asyncio.run(main())


def test_write_to_a_pipe_nobody_reads_fails() -> None:
    async def main() -> None:
        r, w = os.pipe()
        os.close(r)
        writer = PipeWriter(w)
        with pytest.raises(BrokenPipeError):
            await writer.write(b"x")
        writer.close_now()

    asyncio.run(main())


def test_find_port_by_name(tmp_path: Path) -> None:
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    for port, name in (("vport1p1", "other"), ("vport1p2", "agent.channel.0")):
        (sysfs / port).mkdir(parents=True)
        (sysfs / port / "name").write_text(name + "\n")
    dev.mkdir()
    assert find_port("agent.channel.0", str(sysfs), str(dev)) is None  # no node yet
    (dev / "vport1p2").touch()
    assert find_port("agent.channel.0", str(sysfs), str(dev)) == str(dev / "vport1p2")
    assert find_port("agent.channel.0", str(tmp_path / "none"), str(dev)) is None


# ---- hotplug ----------------------------------------------------------------------------

UEVENTS = [
    ("cpu-add", b"add@/devices/system/cpu/cpu2\0ACTION=add\0DEVPATH=/devices/system/cpu/cpu2"
     b"\0SUBSYSTEM=cpu\0SEQNUM=1", ("/sys/devices/system/cpu/cpu2/online", "1")),
    ("memory-add", b"ACTION=add\0DEVPATH=/devices/system/memory/memory40\0SUBSYSTEM=memory",
     ("/sys/devices/system/memory/memory40/state", "online")),
    ("cpu-remove", b"ACTION=remove\0DEVPATH=/devices/system/cpu/cpu2\0SUBSYSTEM=cpu", None),
    ("other-device", b"ACTION=add\0DEVPATH=/devices/virtual/net/lo\0SUBSYSTEM=net", None),
    ("garbage", b"\xff\xfe", None),
]


@pytest.mark.parametrize(("message", "plan"), [c[1:] for c in UEVENTS],
                         ids=[c[0] for c in UEVENTS])
def test_plan_online(message: bytes, plan: tuple[str, str] | None) -> None:
    assert plan_online(message) == plan


def test_apply_online_writes_and_tolerates_gone_devices(tmp_path: Path) -> None:
    target = tmp_path / "online"
    target.write_text("0")
    apply_online(str(target), "1")
    assert target.read_text() == "1"
    apply_online(str(tmp_path / "gone" / "online"), "1")  # ENOENT: nothing to do
