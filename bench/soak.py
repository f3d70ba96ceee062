"""Soak benchmark: load and leaks of pykata under a real containerd, driven with `ctr`.

A private containerd (tests/e2e/containerd_support.py) with a local busybox image and a
private pykata state dir runs three phases:

- runs:  N sequential `ctr run --rm --runtime io.containerd.pykata.v2 IMAGE id true`;
- pods:  M pods started at once (`ctr run -d ... sleep 1000`), one `ctr task exec` each
         (its output checked), then all killed and deleted;
- execs: one task taking E sequential `ctr task exec`s, with the shim daemon's RSS
         (/proc/<pid>/status VmRSS) before and after.

After each phase (once things have had `--settle` seconds to go) and at the end it counts
what was left, by kind: processes naming its dirs (QEMU, virtiofsd, shims), mounts under
them, sandbox state dirs, host cgroups of its containers, pykata taps and tc ingress
state, shim sockets in <state_dir>/s, a half-made VM template (<state_dir>/.template/new;
the template itself stays, by design), tasks and containers
still listed, and unreaped children. Every failure is reported with its error; the run
goes on. Exit status 1 if anything was left or failed.

    PYTHONPATH=src python bench/soak.py [--runs N] [--pods M] [--execs E] [--quick]

The shims containerd starts import pykata from this checkout's src/ (PYTHONPATH is set on
containerd), whatever the installed package points at.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(1, str(SRC))  # pykata's own leftover cleanup and accel decision
from containerd_support import (  # noqa: E402
    IMAGE_REF,
    Containerd,
    CtrFailed,
    build_busybox_image,
    leftover_pids,
)

RUNTIME = "io.containerd.pykata.v2"
SHIM = "containerd-shim-pykata-v2"
TAP = re.compile(r"tap\d+_pykata\Z")  # pykata.plan.network: f"tap{i}_pykata"
CGROUP_PARENTS = ("pykata", "pykata_overhead")  # pykata.plan.cgroups, without a cgroupsPath
KINDS = ("processes", "mounts", "state dirs", "cgroups", "taps", "tc", "sockets",
         "template files", "ctr records", "zombies")
RUN_TIMEOUT = 300.0   # a VM boot under TCG on a loaded 2-core host
EXEC_TIMEOUT = 120.0
FAILURES_SHOWN = 5


@dataclass
class Soak:
    """What every phase needs, and what the run has found so far."""

    ctrd: Containerd
    base: Path
    state_dir: Path
    tag: str                                   # prefix of every container id of this run
    settle_s: float
    failures: list[str] = field(default_factory=list)
    alike: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # failures by shape
    seen: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})
    ids: set[str] = field(default_factory=set)
    log_offset: int = 0
    accel_seen: str = ""

    def fail(self, phase: str, what: str, error: str) -> None:
        """Record a failure; of failures alike but for numbers, only the first few print."""
        line = f"[{phase}] {what}: {error}"
        self.failures.append(line)
        alike = self.alike.setdefault((phase, re.sub(r"\d+", "N", f"{what}: {error}")), [])
        alike.append(line)
        if len(alike) <= FAILURES_SHOWN:
            print(f"  FAIL {line}", flush=True)
        if len(alike) == FAILURES_SHOWN:
            print("  (further failures like this one are counted, not printed)", flush=True)

    def cid(self, name: str) -> str:
        self.ids.add(f"{self.tag}-{name}")
        return f"{self.tag}-{name}"

    def ctr(self, phase: str, what: str, *args: str,
            timeout: float = 60) -> subprocess.CompletedProcess[bytes] | None:
        """`ctr ARGS`; None (and a failure recorded) when it fails or times out."""
        try:
            return self.ctrd.ctr(*args, timeout=timeout)
        except CtrFailed as e:
            err = (e.stderr or b"").decode(errors="replace").strip()
            self.fail(phase, what, f"ctr exited {e.returncode}: {err[-600:]}")
        except subprocess.TimeoutExpired:
            self.fail(phase, what, f"ctr {' '.join(args[:2])} timed out after {timeout:g}s")
        return None

    def quiet(self, *args: str, timeout: float = 60) -> None:
        """A cleanup call whose failure is not news (e.g. deleting what never started)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ctrd.ctr(*args, timeout=timeout, check=False)


# --- figures -----------------------------------------------------------------------------


def stats(label: str, seconds: Sequence[float]) -> str:
    if not seconds:
        return f"  {label:<26} n=0"
    ms = [s * 1000 for s in seconds]
    return (f"  {label:<26} n={len(ms):<4} median {statistics.median(ms):7.0f} ms"
            f"   min {min(ms):6.0f}   max {max(ms):6.0f}")


def timed(call: Callable[[], object]) -> tuple[float, object]:
    t0 = time.monotonic()
    result = call()
    return time.monotonic() - t0, result


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def fd_count(pid: int | None) -> int | str:
    try:
        return len(os.listdir(f"/proc/{pid}/fd")) if pid else "?"
    except OSError:
        return "?"


def argv_of(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")] if raw else []


def proc_state(pid: int) -> tuple[str, int]:
    """(state letter, ppid); ("", 0) once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return "", 0
    return fields[0], int(fields[1])


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def shim_daemon(ctrd: Containerd, task_id: str) -> int | None:
    """The long-lived shim of `task_id`: forked by `start`, so its argv ends in `start`."""
    for pid in all_pids():
        argv = argv_of(pid)
        if (any(os.path.basename(a) == SHIM for a in argv[:2]) and argv[-1:] == ["start"]
                and str(ctrd.address) in argv and task_id in argv
                and proc_state(pid)[0] not in ("Z", "")):
            return pid
    return None


# --- the machine -------------------------------------------------------------------------


def machine() -> str:
    model = next((line.partition(":")[2].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal:"))
    try:
        from pykata.host.facts import read_host_facts
        from pykata.plan.vm import plan_accel

        accel, why = plan_accel("auto", read_host_facts())
        planned = f"{accel} ({why})"
    except Exception as e:  # a report line, not a decision
        planned = f"unknown ({e})"
    rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    return (f"machine: {platform.node()}, {model}, {os.cpu_count()} cores "
            f"({len(os.sched_getaffinity(0))} usable), {mem / 2**20:.1f} GiB, "
            f"kernel {platform.release()}\n"
            f"accel (pykata's plan for accel=auto): {planned}\n"
            f"pykata source: {SRC} (git {rev or '?'}); load average {load()}")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- leftovers ---------------------------------------------------------------------------


def mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
                  for line in f]
    return sorted({p for p in points if p == str(root) or p.startswith(prefix)})


def cgroup_roots() -> list[Path]:
    """The cgroup v2 root or v1 hierarchies (and a hybrid host's unified one)."""
    top = Path("/sys/fs/cgroup")
    subs = [p for p in sorted(top.iterdir()) if p.is_dir() and os.path.ismount(p)]
    return subs or [top]


def cgroup_leftovers(namespace: str, ids: Iterable[str]) -> list[str]:
    """ctr's cgroupsPath is /<namespace>/<id>; pykata's overhead cgroup /pykata_overhead/<id>.
    The namespace dir itself is containerd's parent, not a container's: not counted."""
    found = []
    for root in cgroup_roots():
        ns_dir = root / namespace
        if ns_dir.is_dir():
            found += [str(p) for p in ns_dir.rglob("*") if p.is_dir()]
        for parent in CGROUP_PARENTS:
            found += [str(root / parent / i) for i in ids if (root / parent / i).is_dir()]
    return sorted(found)


def net_leftovers() -> tuple[list[str], list[str]]:
    """(pykata taps in this network namespace, tc ingress state naming or on them)."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                         timeout=30).stdout
    links = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
             if line.count(":") >= 2]
    taps = [name for name in links if TAP.match(name)]
    tc = []
    for name in links:
        filters = subprocess.run(["tc", "filter", "show", "dev", name, "ingress"],
                                 capture_output=True, text=True, timeout=30).stdout
        tc += [f"{name}: filter {line.strip()}" for line in filters.splitlines()
               if "_pykata" in line]
    for name in taps:
        qdiscs = subprocess.run(["tc", "qdisc", "show", "dev", name], capture_output=True,
                                text=True, timeout=30).stdout
        tc += [f"{name}: {line.strip()}" for line in qdiscs.splitlines() if "ingress" in line]
    return taps, tc


def files_in(d: Path) -> list[str]:
    return sorted(str(p) for p in d.rglob("*") if not p.is_dir()) if d.is_dir() else []


def census(soak: Soak) -> dict[str, list[str]]:
    ctrd, state = soak.ctrd, soak.state_dir
    assert ctrd.pid is not None
    procs = []
    for pid in leftover_pids(soak.base, exclude=[ctrd.pid]):
        argv = argv_of(pid)
        prog = os.path.basename(argv[1] if argv[:1] and "python" in argv[0] and len(argv) > 1
                                else (argv or ["?"])[0])
        procs.append(f"{prog} pid {pid}: {' '.join(argv)[:200]}")
    dirs = sorted(str(p) for p in state.iterdir()
                  if p.is_dir() and p.name not in ("s", ".template")) if state.is_dir() else []
    taps, tc = net_leftovers()
    records = []
    for what in ("task", "container"):
        r = ctrd.ctr(what, "ls", check=False, timeout=30)
        records += [f"{what} {line}" for line in r.stdout.decode().splitlines()[1:] if line]
    zombies = [f"pid {pid} (parent {ppid})" for pid in all_pids()
               for st, ppid in [proc_state(pid)] if st == "Z" and ppid in (ctrd.pid, os.getpid())]
    return {
        "processes": procs, "mounts": mounts_under(soak.base), "state dirs": dirs,
        "cgroups": cgroup_leftovers(ctrd.namespace, soak.ids), "taps": taps, "tc": tc,
        "sockets": files_in(state / "s"), "template files": files_in(state / ".template" / "new"),
        "ctr records": records, "zombies": zombies,
    }


def checkpoint(soak: Soak, label: str) -> None:
    """Wait up to settle_s for things to go, then count (and print) what is still there."""
    deadline = time.monotonic() + soak.settle_s
    while True:
        found = census(soak)
        if not any(found.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for kind, items in found.items():
        soak.seen[kind].update(items)
    print(f"  leftovers after {label}: "
          + ", ".join(f"{k} {len(v)}" for k, v in found.items()), flush=True)
    for kind, items in found.items():
        for item in items[:20]:
            print(f"    {kind}: {item}")
        if len(items) > 20:
            print(f"    {kind}: ... {len(items) - 20} more")
    scan_log(soak, label)


def scan_log(soak: Soak, label: str) -> None:
    """A shim that did not end cleanly is a failure; containerd's errors are shown."""
    try:
        with open(soak.ctrd.log_path, "rb") as f:
            f.seek(soak.log_offset)
            text = f.read().decode(errors="replace")
            soak.log_offset = f.tell()
    except OSError:
        return
    errors = [line for line in text.splitlines() if "level=error" in line]
    for line in errors:
        if 'msg="shim failed' in line:
            soak.fail(label, "containerd log", line[-400:])
    if errors:
        print(f"  containerd logged {len(errors)} errors during {label}; the first ones:")
        for line in errors[:5]:
            print(f"    {line[-300:]}")


# --- phases ------------------------------------------------------------------------------


def phase_runs(soak: Soak, n: int) -> None:
    print(f"\n== runs: {n} x ctr run --rm {RUNTIME} {IMAGE_REF} true", flush=True)
    times: list[float] = []
    t_phase = time.monotonic()
    for i in range(n):
        cid = soak.cid(f"r{i}")
        t0 = time.monotonic()
        r = soak.ctr("runs", f"run {cid}", "run", "--rm", "--runtime", RUNTIME, IMAGE_REF, cid,
                     "true", timeout=RUN_TIMEOUT)
        elapsed = time.monotonic() - t0
        if r is None:
            soak.quiet("task", "delete", "--force", cid)
            soak.quiet("container", "delete", cid)
        else:
            times.append(elapsed)
        if (i + 1) % 10 == 0 or i + 1 == n:
            print(f"  {i + 1}/{n} done, {time.monotonic() - t_phase:.0f} s,"
                  f" {len(soak.failures)} failures so far, load {load()}", flush=True)
    print(stats("ctr run --rm (ok runs)", times))
    print(f"  phase wall {time.monotonic() - t_phase:.1f} s")
    checkpoint(soak, "runs")


def start_pod(soak: Soak, cid: str) -> float | None:
    elapsed, r = timed(lambda: soak.ctr("pods", f"run -d {cid}", "run", "-d", "--runtime",
                                        RUNTIME, IMAGE_REF, cid, "sleep", "1000",
                                        timeout=RUN_TIMEOUT))
    return elapsed if r is not None else None


def exec_checked(soak: Soak, phase: str, cid: str, exec_id: str) -> float | None:
    want = f"soak {cid} {exec_id}"
    elapsed, r = timed(lambda: soak.ctr(phase, f"exec {exec_id} in {cid}", "task", "exec",
                                        "--exec-id", exec_id, cid, "echo", want,
                                        timeout=EXEC_TIMEOUT))
    if not isinstance(r, subprocess.CompletedProcess):
        return None
    got = r.stdout.decode(errors="replace").strip()
    if got != want:
        soak.fail(phase, f"exec {exec_id} in {cid}", f"output {got!r}, want {want!r}")
        return None
    return elapsed


def wait_stopped(soak: Soak, cid: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(CtrFailed, subprocess.TimeoutExpired):
            status = {t.id: t.status for t in soak.ctrd.tasks()}
            if status.get(cid, "STOPPED") == "STOPPED":
                return True
        time.sleep(0.2)
    return False


def remove(soak: Soak, phase: str, cid: str) -> float | None:
    """kill -9, wait until stopped, delete the task and the container."""
    t0 = time.monotonic()
    ok = soak.ctr(phase, f"kill {cid}", "task", "kill", "-s", "SIGKILL", cid) is not None
    if not wait_stopped(soak, cid, 60):
        soak.fail(phase, f"kill {cid}", "task not STOPPED 60 s after SIGKILL")
        ok = False
    ok &= soak.ctr(phase, f"task delete {cid}", "task", "delete", cid, timeout=120) is not None
    ok &= soak.ctr(phase, f"container delete {cid}", "container", "delete", cid) is not None
    if not ok:  # whatever state it is in, it must go before the next phase
        soak.quiet("task", "delete", "--force", cid, timeout=120)
        soak.quiet("container", "delete", cid)
    return time.monotonic() - t0 if ok else None


def phase_pods(soak: Soak, m: int) -> None:
    print(f"\n== pods: {m} x ctr run -d ... sleep 1000 at once, one exec each, kill+delete",
          flush=True)
    cids = [soak.cid(f"p{i}") for i in range(m)]
    with ThreadPoolExecutor(max_workers=max(m, 1)) as pool:
        t0 = time.monotonic()
        starts = list(pool.map(lambda c: start_pod(soak, c), cids))
        start_wall = time.monotonic() - t0
        up = [c for c, s in zip(cids, starts, strict=True) if s is not None]
        t0 = time.monotonic()
        execs = list(pool.map(lambda c: exec_checked(soak, "pods", c, "e1"), up))
        exec_wall = time.monotonic() - t0
        t0 = time.monotonic()
        removes = list(pool.map(lambda c: remove(soak, "pods", c), up))
        remove_wall = time.monotonic() - t0
    for c in set(cids) - set(up):  # failed starts: whatever ctr made must go too
        soak.quiet("task", "delete", "--force", c, timeout=120)
        soak.quiet("container", "delete", c)
    print(stats("ctr run -d (each)", [s for s in starts if s is not None]))
    print(f"  {len(up)}/{m} pods up; all started in {start_wall:.1f} s (wall)")
    print(stats("ctr task exec (each)", [e for e in execs if e is not None]))
    print(f"  execs wall {exec_wall:.1f} s")
    print(stats("kill+delete (each)", [r for r in removes if r is not None]))
    print(f"  kill+delete wall {remove_wall:.1f} s")
    checkpoint(soak, "pods")


def vm_rss_mib(soak: Soak) -> float:
    """QEMU + virtiofsd (the processes naming the state dir), in MiB."""
    return sum(rss_kib(p) or 0 for p in leftover_pids(soak.state_dir)) / 1024


def note_accel(soak: Soak) -> None:
    for pid in leftover_pids(soak.state_dir):
        argv = argv_of(pid)
        if "-accel" in argv:
            soak.accel_seen = argv[argv.index("-accel") + 1]


def phase_execs(soak: Soak, e: int) -> None:
    print(f"\n== execs: one task, {e} sequential ctr task exec, shim RSS", flush=True)
    cid = soak.cid("x")
    start = start_pod(soak, cid)
    if start is None:
        soak.quiet("task", "delete", "--force", cid, timeout=120)
        soak.quiet("container", "delete", cid)
        checkpoint(soak, "execs")
        return
    print(f"  task up in {start:.1f} s")
    note_accel(soak)
    shim = shim_daemon(soak.ctrd, cid)
    if shim is None:
        soak.fail("execs", "shim", f"no {SHIM} ... start process for {cid}")
    else:
        env = Path(f"/proc/{shim}/environ").read_bytes().split(b"\0")
        pp = next((v.decode() for v in env if v.startswith(b"PYTHONPATH=")), "PYTHONPATH unset")
        print(f"  shim daemon pid {shim} ({pp})")
    rss = {"start": rss_kib(shim) if shim else None}
    fds = {"start": fd_count(shim)}
    warm = min(10, e)
    for i in range(warm):  # first execs import and allocate what every later one reuses
        exec_checked(soak, "execs", cid, f"w{i}")
    rss["warm"], vm_before = (rss_kib(shim) if shim else None), vm_rss_mib(soak)
    fds["warm"] = fd_count(shim)
    times: list[float] = []
    samples: list[str] = []
    block: list[float] = []
    blocks: list[str] = []
    every = max(e // 10, 1)
    for i in range(e):
        t = exec_checked(soak, "execs", cid, f"x{i}")
        if t is not None:
            times.append(t)
            block.append(t)
        if (i + 1) % every == 0 or i + 1 == e:
            samples.append(f"{(rss_kib(shim) or 0) / 1024:.1f}" if shim else "?")
            blocks.append(f"{statistics.median(block) * 1000:.0f}/{len(block)}" if block
                          else "-/0")
            block = []
    rss["end"], fds["end"] = (rss_kib(shim) if shim else None), fd_count(shim)
    print(stats("ctr task exec", times))
    print(f"  exec median ms / ok count, per {every} execs: {' '.join(blocks)}")
    print(f"  shim open fds: at start {fds['start']}, after warm-up {fds['warm']},"
          f" at the end {fds['end']}")
    print(f"  shim RSS MiB at start {fmt(rss['start'])}, after {warm} warm-up execs"
          f" {fmt(rss['warm'])}, after {e} more {fmt(rss['end'])}")
    print(f"  shim RSS MiB every {every} execs: {' '.join(samples)}")
    if rss["warm"] is not None and rss["end"] is not None:
        grow = rss["end"] - rss["warm"]
        print(f"  shim RSS growth over {e} execs: {grow / 1024:+.2f} MiB ({grow:+d} KiB,"
              f" {grow / max(e, 1):+.1f} KiB/exec)")
    print(f"  QEMU+virtiofsd RSS {vm_before:.1f} -> {vm_rss_mib(soak):.1f} MiB")
    removed = remove(soak, "execs", cid)
    print(f"  kill+delete {fmt_s(removed)}")
    checkpoint(soak, "execs")


def fmt(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f}"


def fmt_s(seconds: float | None) -> str:
    return "failed" if seconds is None else f"{seconds:.1f} s"


# --- the run -----------------------------------------------------------------------------


def reap(base: Path, state_dir: Path) -> None:
    """After containerd is gone: stop what named our dirs (by pid), unmount, clear cgroups."""
    for pid in leftover_pids(base):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if state_dir.is_dir():
        from pykata.sandbox.leftovers import clear_sandbox

        for d in state_dir.iterdir():
            if d.is_dir() and d.name not in ("s", ".template"):
                clear_sandbox(str(d))
    for _ in range(3):
        for mp in sorted(mounts_under(base), key=lambda p: -p.count("/")):
            subprocess.run(["umount", "--lazy", mp], capture_output=True, timeout=30)


def summary(soak: Soak, at_stop: list[str]) -> int:
    counts = {k: len(v) for k, v in soak.seen.items()}
    if at_stop:
        print("containerd's stop still found (counted under 'at stop'):")
        for item in at_stop:
            print(f"  {item}")
    counts["at stop"] = len(at_stop)
    print("\nfailures:" if soak.failures else "\nfailures: none")
    for alike in soak.alike.values():
        more = f" (and {len(alike) - 1} more like it, the last: {alike[-1]})" if alike[1:] else ""
        print(f"  {len(alike)} x {alike[0]}{more}")
    print(f"accel seen in QEMU's argv: {soak.accel_seen or 'no QEMU seen'}; load {load()}")
    print("leftovers: " + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f"; failures: {len(soak.failures)}")
    return 1 if soak.failures or any(counts.values()) else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="sequential ctr run --rm (200)")
    ap.add_argument("--pods", type=int, default=8, help="pods started at once (8)")
    ap.add_argument("--execs", type=int, default=500, help="execs into one task (500)")
    ap.add_argument("--quick", action="store_true", help="runs 3, pods 2, execs 20 (for CI)")
    ap.add_argument("--settle", type=float, default=20.0,
                    help="seconds to let a phase's things go before counting (20)")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.pods, args.execs = 3, 2, 20
    if os.geteuid() != 0:
        sys.exit("needs root (containerd, mounts, cgroups)")
    shim_dir = Path(sys.executable).parent
    if not (shim_dir / SHIM).exists():
        sys.exit(f"{SHIM} is not installed beside {sys.executable} (pip install -e .)")
    print(machine())
    print(f"runs {args.runs}, pods {args.pods}, execs {args.execs}, settle {args.settle:g} s",
          flush=True)
    # /tmp and short: the shim's socket is <state_dir>/s/<32 hex>.sock.
    base = Path(tempfile.mkdtemp(prefix="pksoak-", dir="/tmp"))
    state_dir = base / "run"
    image_dir = os.environ.get("PYKATA_TEST_IMAGE_DIR", "/var/lib/pykata")
    conf = base / "pykata.toml"
    conf.write_text(f'[runtime]\nstate_dir = "{state_dir}"\n[image]\ndir = "{image_dir}"\n')
    env = {"PYKATA_CONF_FILE": str(conf), "PYTHONPATH": str(SRC)}
    build_busybox_image(base / "busybox.tar")
    ctrd = Containerd(path_prepend=[shim_dir], env=env, base_dir=base / "c",
                      namespace=f"pykata-soak-{os.getpid()}")
    soak = Soak(ctrd, base, state_dir, f"sk{os.getpid()}", args.settle)
    at_stop: list[str] = []
    t0 = time.monotonic()
    try:
        ctrd.start()
        ctrd.import_image(base / "busybox.tar")
        phase_runs(soak, args.runs)
        phase_pods(soak, args.pods)
        phase_execs(soak, args.execs)
        checkpoint(soak, "the end")
    except KeyboardInterrupt:
        soak.fail("run", "interrupted", "KeyboardInterrupt")
    except Exception as e:  # reported; cleanup and summary still run
        soak.fail("run", "aborted", f"{type(e).__name__}: {e}")
    finally:
        log = Path(f"/tmp/pykata-soak-{os.getpid()}.containerd.log")
        with contextlib.suppress(OSError):
            shutil.copyfile(ctrd.log_path, log)
        at_stop = ctrd.stop()
        reap(base, state_dir)
        shutil.rmtree(base, ignore_errors=True)
    print(f"\ntotal wall {time.monotonic() - t0:.0f} s")
    code = summary(soak, at_stop)
    if code:
        print(f"containerd log kept: {log}")
    else:
        log.unlink(missing_ok=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
