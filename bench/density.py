"""Density benchmark: N idle pods through containerd, for two configurations side by side.

For each variant (a drop-in applied to a copy of the configuration), N pods are started
one after another with `ctr run -d` (a busybox `sleep`) through one private containerd;
with all N running it reports:
- PSS per pod: the sum over every QEMU, virtiofsd and shim process, divided by N (shared
  pages count once), plus a clone's guest RAM that QEMU has not mapped (a memfd pykata
  filled from the template: in no process's PSS, but memory all the same);
- of that, QEMU's anonymous memory (TCG's translation cache is most of it) and guest RAM;
- the drop in the host's MemAvailable per pod;
- the cold start of `pykata run -- true` against the bare floor (bench/boot.py's).
- the CPU time of a busy container: `pykata run` of a busybox awk loop, less `pykata run --
  true` (cold: templating off).
The variants run one after the other, each from nothing and with a state dir (and so a
template) of its own; then the pods go and nothing may be left. The default compares free
page reporting on (`reclaim_guest_freed_memory`, the default) and off. A variant's TOML must
not set `[runtime]` (the benchmark sets its state dir).

    python bench/density.py [--pods 10] [--runs 3] [--variant NAME=TOML ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from boot import descendants, floor_argv, memfd_kib, memfd_mapped_kib, program, timed
from boot import write_config as write_variant
from containerd_support import IMAGE_REF, Containerd, build_busybox_image, leftover_pids

from pykata.host.config_files import config_path, load_config
from pykata.host.facts import read_host_facts
from pykata.plan.vm import plan_vm

RUNTIME = "io.containerd.pykata.v2"
DEFAULT_VARIANTS = {
    "reclaim": "[hypervisor.qemu]\nreclaim_guest_freed_memory = true\n",
    "no-reclaim": "[hypervisor.qemu]\nreclaim_guest_freed_memory = false\n",
}
SETTLE_S = 5.0  # after the last pod runs: boot-time frees reported, allocations settled


@dataclass(frozen=True)
class Footprint:
    """KiB per pod."""

    pss: float
    qemu_anon: float
    guest_ram: float
    mem_available_drop: float
    by_program: dict[str, float]  # PSS by process, QEMU's by kind of mapping


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def smaps_kib(pid: int) -> dict[str, int]:
    """PSS, anonymous memory, the PSS of memfd mappings (guest RAM), of the DAX image, and
    the anonymous memory of executable anonymous mappings (TCG's translation cache)."""
    out = {"pss": 0, "anon": 0, "memfd": 0, "image": 0, "tcg": 0}
    kind = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=5)  # a name may hold spaces: "/memfd:x (deleted)"
            if head and not head[0].endswith(":"):
                name = head[5].strip() if len(head) == 6 else ""
                kind = ("memfd" if name.startswith("/memfd:") else
                        "image" if name.endswith("/rootfs.img") else
                        "tcg" if not name and "x" in head[1] else "")
            elif head[0] == "Pss:":
                out["pss"] += int(head[1])
                if kind in ("memfd", "image"):
                    out[kind] += int(head[1])
            elif head[0] == "Anonymous:":  # QEMU's anonymous memory is its own
                out["anon"] += int(head[1])
                if kind == "tcg":
                    out["tcg"] += int(head[1])
    return out


def footprint(pids: list[int], pods: int, available_before: int) -> Footprint:
    """Per pod: PSS in all, QEMU's anonymous memory, guest RAM, the MemAvailable drop, and
    PSS by process (QEMU's split into translation cache, other anonymous memory, guest
    RAM, the DAX image and the rest: its binary and libraries)."""
    pss = anon = ram = 0
    parts: dict[str, float] = {}

    def add(kind: str, kib: float) -> None:
        parts[kind] = parts.get(kind, 0) + kib / pods

    for pid in pids:
        smaps = smaps_kib(pid)
        if program(pid).startswith("qemu-system"):
            unmapped = max(0, memfd_kib(pid) - memfd_mapped_kib(pid))
            guest = smaps["memfd"] + unmapped
            pss += smaps["pss"] + unmapped
            ram += guest
            anon += smaps["anon"]
            add("qemu tcg", smaps["tcg"])
            add("qemu anon", smaps["anon"] - smaps["tcg"])
            add("qemu guest RAM", guest)
            add("qemu image", smaps["image"])
            add("qemu files", smaps["pss"] - smaps["anon"] - smaps["memfd"] - smaps["image"])
        else:
            pss += smaps["pss"]
            add("virtiofsd" if program(pid).startswith("virtiofsd") else "shim", smaps["pss"])
    drop = available_before - mem_available_kib()
    return Footprint(pss / pods, anon / pods, ram / pods, drop / pods, parts)


@contextlib.contextmanager
def containerd(conf: Path, base: Path) -> Iterator[Containerd]:
    ctrd = Containerd(path_prepend=[os.path.dirname(sys.executable)],
                      env={"PYKATA_CONF_FILE": str(conf)}).start()
    try:
        ctrd.import_image(base / "busybox.tar")
        yield ctrd
    finally:
        left = ctrd.stop()
        if left:
            print(f"  left behind (now removed): {left}")


def idle_pods(conf: Path, base: Path, pods: int) -> Footprint:
    """N idle pods up one after another, measured together, then removed."""
    with containerd(conf, base) as ctrd:
        ctrd.ctr("run", "--rm", "--runtime", RUNTIME, IMAGE_REF, "warm", "true", timeout=300)
        time.sleep(1.0)  # the warm-up's shim and VM gone
        before = mem_available_kib()
        names = [f"idle{i}" for i in range(pods)]
        try:
            for name in names:
                ctrd.ctr("run", "-d", "--runtime", RUNTIME, IMAGE_REF, name, "sleep", "100000",
                         timeout=300)
            time.sleep(SETTLE_S)
            assert ctrd.pid is not None
            pids = leftover_pids(ctrd.base, base, exclude=[ctrd.pid])
            pids = sorted({*pids, *(p for pid in pids for p in descendants(pid))})
            pids = [p for p in pids if program(p).startswith(("qemu-system", "virtiofsd"))
                    or "containerd-shim-pykata" in " ".join(argv(p))]
            return footprint(pids, pods, before)
        finally:
            ctrd.remove_tasks(names)


def argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def cold_start(confs: dict[str, Path], runs: int) -> dict[str, list[float]]:
    """`pykata run -- true` cold, per variant, and the floor; interleaved."""
    pykata = shutil.which("pykata") or sys.exit("pykata is not on PATH")
    cold = {name: dict(os.environ, PYKATA_CONF_FILE=str(conf)) for name, conf in confs.items()}
    plan = plan_vm(load_config(str(next(iter(confs.values())))), read_host_facts(), "bench",
                   "/tmp")
    samples: dict[str, list[float]] = {"floor": [], **{name: [] for name in confs}}
    for i in range(runs + 1):  # the first round warms the page cache
        samples_now = {"floor": timed(floor_argv(plan), dict(os.environ)),
                       **{name: timed([pykata, "run", "--", "true"], env)
                          for name, env in cold.items()}}
        if i:
            for name, value in samples_now.items():
                samples[name].append(value)
    return samples


BUSY = "awk 'BEGIN { for (i = 0; i < 2000000; i++) x += i % 7 }'"


def state(base: Path, name: str) -> str:
    return f'[runtime]\nstate_dir = "{base}/{name}-run"\n'


def busy_cpu(confs: dict[str, Path], runs: int, idle: dict[str, float]
             ) -> dict[str, list[float]]:
    """A busy container's run, less the variant's `true` run (median), interleaved."""
    pykata = shutil.which("pykata") or sys.exit("pykata is not on PATH")
    envs = {name: dict(os.environ, PYKATA_CONF_FILE=str(conf)) for name, conf in confs.items()}
    out: dict[str, list[float]] = {name: [] for name in confs}
    for _ in range(runs):
        for name, env in envs.items():
            out[name].append(timed([pykata, "run", "--", "sh", "-c", BUSY], env) - idle[name])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3, help="cold starts per variant")
    ap.add_argument("--config", help="pykata configuration file (the base)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=TOML",
                    help="a variant: a TOML drop-in (\\n for newlines); default: free page "
                    "reporting on and off")
    args = ap.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant) or DEFAULT_VARIANTS
    with contextlib.ExitStack() as cleanup:
        base = Path(tempfile.mkdtemp(prefix="pkd-", dir="/tmp"))  # short: sockets below
        cleanup.callback(shutil.rmtree, base, ignore_errors=True)
        build_busybox_image(base / "busybox.tar")
        main_conf = config_path(args.config)[0]
        confs = {name: write_variant(main_conf, base / name, state(base, name)
                                     + toml.replace("\\n", "\n"))
                 for name, toml in variants.items()}
        cold = {name: write_variant(main_conf, base / f"{name}-cold", state(base, name)
                                    + toml.replace("\\n", "\n")
                                    + "[factory]\nenable_template = false\n")
                for name, toml in variants.items()}
        print(f"density: {args.pods} idle busybox pods through containerd (`ctr run -d`), "
              f"{os.cpu_count()} host CPUs, {mem_available_kib() >> 10} MiB available")
        for name, conf in confs.items():
            f = idle_pods(conf, base, args.pods)
            print(f"  {name:<12} PSS/pod {f.pss / 1024:6.1f} MiB   of which QEMU anon "
                  f"{f.qemu_anon / 1024:6.1f}, guest RAM {f.guest_ram / 1024:6.1f}   "
                  f"MemAvailable drop/pod {f.mem_available_drop / 1024:6.1f} MiB")
            print(f"  {'':<12} PSS/pod by process: " + ", ".join(
                f"{k} {v / 1024:.1f}" for k, v in sorted(f.by_program.items())) + " MiB")
        samples = cold_start(cold, args.runs)
        floor = statistics.median(samples.pop("floor"))
        print(f"cold start (`pykata run -- true`, templating off; medians of {args.runs}, "
              f"interleaved): floor {floor * 1000:.0f} ms")
        for name, values in samples.items():
            med = statistics.median(values)
            print(f"  {name:<12} {med * 1000:6.0f} ms (min {min(values) * 1000:.0f}, max "
                  f"{max(values) * 1000:.0f})   {med / floor:.2f}x the floor")
        busy = busy_cpu(cold, args.runs, {k: statistics.median(v) for k, v in samples.items()})
        print(f"busy container (`{BUSY}`: its run less a `true` run; medians of {args.runs}):")
        for name, values in busy.items():
            print(f"  {name:<12} {statistics.median(values) * 1000:6.0f} ms (min "
                  f"{min(values) * 1000:.0f}, max {max(values) * 1000:.0f})")


if __name__ == "__main__":
    main()
