"""Cgroup v2 statistics: the file parsers, and the wire compatibility of the agent's
CgroupMetrics with containerd's io.containerd.cgroups.v2.Metrics (the shim forwards our
bytes under that type URL, so they must decode as that message)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from pykata.agent.cgroups import (
    UINT64_MAX,
    CgroupStats,
    cgroup2_mount,
    cgroup2_path,
    parse_io_stat,
    parse_stats,
)
from pykata.agent.handlers import metrics
from pykata.agent.runtime import parse_pids
from pykata.protocol.pb import agent_pb2 as pb

# ---- golden: containerd/cgroups v2/stats/metrics.proto (v1.0.4) ------------------------------
# (message, field, number, type): type is a message name, or "uint64". Every scalar is uint64.

CONTAINERD_PROTO = Path("/usr/share/gocode/src/github.com/containerd/cgroups/v2/stats/"
                        "metrics.proto")
MEMORY_FIELDS = (
    "anon file kernel_stack slab sock shmem file_mapped file_dirty file_writeback anon_thp "
    "inactive_anon active_anon inactive_file active_file unevictable slab_reclaimable "
    "slab_unreclaimable pgfault pgmajfault workingset_refault workingset_activate "
    "workingset_nodereclaim pgrefill pgscan pgsteal pgactivate pgdeactivate pglazyfree "
    "pglazyfreed thp_fault_alloc thp_collapse_alloc usage usage_limit swap_usage swap_limit"
).split()
GOLDEN: dict[str, list[tuple[str, int, str]]] = {
    "Metrics": [("pids", 1, "PidsStat"), ("cpu", 2, "CPUStat"), ("memory", 4, "MemoryStat"),
                ("io", 6, "IOStat"), ("memory_events", 8, "MemoryEvents")],
    "PidsStat": [("current", 1, "uint64"), ("limit", 2, "uint64")],
    "CPUStat": [(name, i, "uint64") for i, name in enumerate(
        ["usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled",
         "throttled_usec"], 1)],
    "MemoryStat": [(name, i, "uint64") for i, name in enumerate(MEMORY_FIELDS, 1)],
    "MemoryEvents": [(name, i, "uint64") for i, name in enumerate(
        ["low", "high", "max", "oom", "oom_kill"], 1)],
    "IOStat": [("usage", 1, "repeated IOEntry")],
    "IOEntry": [(name, i, "uint64") for i, name in enumerate(
        ["major", "minor", "rbytes", "wbytes", "rios", "wios"], 1)],
}
# Our message for each of containerd's.
OURS: dict[str, type[Message]] = {
    "Metrics": pb.CgroupMetrics, "PidsStat": pb.PidsStat, "CPUStat": pb.CpuStat,
    "MemoryStat": pb.MemoryStat, "MemoryEvents": pb.MemoryEvents, "IOStat": pb.IOStat,
    "IOEntry": pb.IOEntry}


def _golden_metrics_class() -> type[Message]:
    """io.containerd.cgroups.v2.Metrics, built from GOLDEN alone."""
    f = descriptor_pb2.FileDescriptorProto(name="golden_metrics.proto",
                                           package="io.containerd.cgroups.v2", syntax="proto3")
    for message, fields in GOLDEN.items():
        m = f.message_type.add(name=message)
        for name, number, kind in fields:
            field = m.field.add(name=name, number=number)
            field.label = (FieldDescriptor.LABEL_REPEATED if kind.startswith("repeated ")
                           else FieldDescriptor.LABEL_OPTIONAL)
            if kind == "uint64":
                field.type = FieldDescriptor.TYPE_UINT64
            else:
                field.type = FieldDescriptor.TYPE_MESSAGE
                field.type_name = f".io.containerd.cgroups.v2.{kind.split()[-1]}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)  # type: ignore[no-untyped-call]
    desc = pool.FindMessageTypeByName(  # type: ignore[no-untyped-call]
        "io.containerd.cgroups.v2.Metrics")
    cls: type[Message] = message_factory.MessageFactory(pool).GetPrototype(desc)
    return cls


@pytest.mark.skipif(not CONTAINERD_PROTO.exists(),
                    reason="golang-github-containerd-cgroups-dev is not installed")
def test_golden_numbers_are_containerds() -> None:
    text = CONTAINERD_PROTO.read_text()
    for message, fields in GOLDEN.items():
        body = re.search(rf"message {message} {{(.*?)}}", text, re.S)
        assert body is not None, message
        theirs = {m[2]: (int(m[3]), (m[0] or "") + m[1]) for m in re.findall(
            r"(repeated )?(\w+)\s+(\w+)\s*=\s*(\d+)", body.group(1))}
        for name, number, kind in fields:
            assert theirs[name] == (number, kind), f"{message}.{name}"


@pytest.mark.parametrize("message", sorted(GOLDEN))
def test_our_messages_have_the_golden_numbers_and_types(message: str) -> None:
    ours = {f.name: (f.number, f.type, f.label) for f in OURS[message].DESCRIPTOR.fields}
    for name, number, kind in GOLDEN[message]:
        want_type = FieldDescriptor.TYPE_UINT64 if kind == "uint64" else \
            FieldDescriptor.TYPE_MESSAGE
        want_label = FieldDescriptor.LABEL_REPEATED if kind.startswith("repeated ") else \
            FieldDescriptor.LABEL_OPTIONAL
        assert ours.pop(name) == (number, want_type, want_label), f"{message}.{name}"
    assert ours == {}, f"{message} has fields containerd's lacks"


def test_our_bytes_decode_as_containerds_metrics() -> None:
    ours = pb.CgroupMetrics()
    n = 1
    for message in (ours.pids, ours.cpu, ours.memory, ours.memory_events,
                    ours.io.usage.add(), ours.io.usage.add()):
        for field in message.DESCRIPTOR.fields:
            n += 1
            setattr(message, field.name, n * 1000)
    ours.memory.usage_limit = UINT64_MAX
    data = ours.SerializeToString()
    theirs = _golden_metrics_class().FromString(data)
    assert theirs.SerializeToString() == data  # every field known, every value kept
    assert theirs.memory.usage_limit == UINT64_MAX  # type: ignore[attr-defined]
    assert theirs.io.usage[1].wios == ours.io.usage[1].wios  # type: ignore[attr-defined]


# ---- parsers ---------------------------------------------------------------------------------

MEMORY_STAT = """anon 1048576
file 2097152
kernel 4096
kernel_stack 16384
pgfault 42
zswap 0
"""


def test_parse_stats_of_a_full_cgroup() -> None:
    stats = parse_stats({
        "pids.current": "3\n", "pids.max": "max\n",
        "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n",
        "memory.current": "3145728\n", "memory.max": "67108864\n", "memory.stat": MEMORY_STAT,
        "memory.swap.current": "0\n", "memory.swap.max": "max\n",
        "memory.events": "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
        "io.stat": "254:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
    })
    assert stats.pids == {"current": 3, "limit": UINT64_MAX}
    assert stats.cpu == {"usage_usec": 1500, "user_usec": 1000, "system_usec": 500,
                         "nr_periods": 0}
    assert stats.memory is not None and stats.memory["anon"] == 1 << 20
    assert (stats.memory["usage"], stats.memory["usage_limit"],
            stats.memory["swap_limit"]) == (3 << 20, 64 << 20, UINT64_MAX)
    assert stats.memory_events == {"low": 0, "high": 0, "max": 2, "oom": 1, "oom_kill": 1}
    assert stats.io == [{"major": 254, "minor": 0, "rbytes": 4096, "wbytes": 0, "rios": 1,
                         "wios": 0, "dbytes": 0, "dios": 0}]
    # Keys our messages lack ("kernel", "zswap", "dbytes") are dropped, the rest kept.
    m = metrics(stats)
    assert (m.memory.kernel_stack, m.memory.pgfault, m.pids.limit) == (16384, 42, UINT64_MAX)
    assert m.io.usage[0].rbytes == 4096


def test_missing_controllers_leave_their_message_unset() -> None:
    stats = parse_stats({"cpu.stat": "usage_usec 7\n"})
    assert stats == CgroupStats(None, {"usage_usec": 7}, None, None, None)
    m = metrics(stats)
    assert m.HasField("cpu") and not m.HasField("memory") and not m.HasField("pids")
    empty = metrics(parse_stats({"cpu.stat": ""}))
    assert empty.HasField("cpu")  # the file exists, its numbers are zero


def test_parsers_skip_odd_lines() -> None:
    assert parse_io_stat("\nnot-a-device x=1\n8:0 rbytes=x wbytes=5\n") == [
        {"major": 8, "minor": 0, "wbytes": 5}]
    assert parse_stats({"memory.current": "junk", "memory.stat": "anon\nfile 3 4\n"}
                       ).memory == {"usage": 0, "usage_limit": 0, "swap_usage": 0,
                                    "swap_limit": 0}


@pytest.mark.parametrize(("text", "path"), [
    ("0::/pykata/c1\n", "/pykata/c1"),
    ("0::/\n", "/"),
    ("4:memory:/x\n1:name=systemd:/\n0::/\n", None),  # hybrid: controllers in v1
    ("4:memory:/x\n", None),
    ("", None),
], ids=["v2", "root", "hybrid", "v1", "empty"])
def test_cgroup2_path(text: str, path: str | None) -> None:
    assert cgroup2_path(text) == path


def test_cgroup2_mount() -> None:
    info = ("22 1 0:21 / /proc rw,relatime - proc proc rw\n"
            "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 "
            "cgroup2 rw\n")
    assert cgroup2_mount(info) == "/sys/fs/cgroup"
    assert cgroup2_mount(info.splitlines()[0]) is None


@pytest.mark.parametrize(("text", "pids"), [
    ("[\n  12,\n  34\n]\n", [12, 34]), ("[]", []), ("null\n", []),
], ids=["crun", "empty", "runc-none"])
def test_parse_pids(text: str, pids: list[int]) -> None:
    assert parse_pids(text) == pids


@pytest.mark.parametrize("text", ["PID\n12\n", '["12"]', "[0]", "{}"],
                         ids=["table", "strings", "zero", "object"])
def test_parse_pids_refuses(text: str) -> None:
    with pytest.raises(OSError, match="not a list of pids"):
        parse_pids(text)


@pytest.mark.parametrize(("text", "kills"), [
    ("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n", 1),
    ("low 0\noom 0\noom_kill 0\n", 0),
    ("oom_kill x\n", 0),
    (None, 0),
])
def test_oom_kills_from_memory_events(tmp_path: Path, text: str | None, kills: int) -> None:
    from pykata.agent.cgroups import oom_kills

    if text is not None:
        (tmp_path / "memory.events").write_text(text)
    assert oom_kills(str(tmp_path)) == kills
