"""containerd benchmark: `ctr run --rm IMAGE true` with runtime pykata vs runc, and
`pykata run` of the same spec without containerd; interleaved, medians and ratios.
Then the memory of one idle busybox pod: the shim's RSS and the PSS of shim + QEMU +
virtiofsd (Kata's figure on bare metal: about 123 MB per pod).

A private containerd (tests/e2e/containerd_support.py) with a locally built busybox image.
`pykata run` gets ctr's spec (`ctr oci spec` plus the cpu shares 1024 that `ctr run`
adds, which make it 2 vCPUs, as the shim sizes ctr's container), so both VM paths boot the
same VM. With templating on (the default), a clone's guest RAM is a memfd pykata filled:
pages the guest has not touched since are in no process's PSS, so they are added.

    python bench/ctr_run.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from boot import memfd_kib, memfd_mapped_kib, rss_pss_kib
from containerd_support import IMAGE_REF, Containerd, build_busybox_image, leftover_pids

RUNTIME = "io.containerd.pykata.v2"


def timed(run: Callable[[], subprocess.CompletedProcess[bytes]]) -> float:
    t0 = time.monotonic()
    r = run()
    elapsed = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    return elapsed


def program(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return os.path.basename(f.read().split(b"\0")[0].decode())


def bundle_for_pykata(base: Path, rootfs: str) -> Path:
    spec = json.loads(subprocess.run(["ctr", "oci", "spec"], capture_output=True,
                                     check=True).stdout)
    spec["process"]["args"] = ["true"]
    spec["process"]["env"] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    spec["process"]["terminal"] = False
    spec["root"] = {"path": rootfs, "readonly": True}
    spec["linux"].setdefault("resources", {})["cpu"] = {"shares": 1024}  # as `ctr run` adds
    bundle = base / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def idle_pod_memory(ctrd: Containerd, state_dir: str) -> None:
    ctrd.ctr("run", "-d", "--runtime", RUNTIME, IMAGE_REF, "idle", "sleep", "1000",
             timeout=120)
    try:
        time.sleep(3)  # let boot-time allocations settle
        rows = []
        # The VM's processes name its state dir; the shim names containerd's socket.
        assert ctrd.pid is not None
        for pid in leftover_pids(Path(state_dir), ctrd.base, exclude=[ctrd.pid]):
            rss, pss = rss_pss_kib(pid)
            rows.append((program(pid), pid, rss, pss))
            if program(pid).startswith("qemu"):
                unmapped = max(0, memfd_kib(pid) - memfd_mapped_kib(pid))
                rows.append(("  guest RAM not mapped", pid, unmapped, unmapped))
        print("idle busybox pod (one ctr container in its VM):")
        for name, pid, rss, pss in rows:
            print(f"  {name:<28} pid {pid:<7} RSS {rss / 1024:7.1f} MiB"
                  f"  PSS {pss / 1024:7.1f} MiB")
        total = sum(r[3] for r in rows) / 1024
        print(f"  total PSS (shim + QEMU + its unmapped guest RAM + virtiofsd) {total:.1f} MiB"
              "   (Kata, bare metal: ~117 MiB)")
    finally:
        ctrd.ctr("task", "kill", "-s", "9", "idle", check=False)
        time.sleep(0.5)
        ctrd.ctr("task", "delete", "idle", check=False, timeout=60)
        ctrd.ctr("container", "delete", "idle", check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    pykata = shutil.which("pykata") or sys.exit("pykata is not on PATH")
    base = Path(tempfile.mkdtemp(prefix="pkb-", dir="/tmp"))
    image_dir = os.environ.get("PYKATA_TEST_IMAGE_DIR", "/var/lib/pykata")
    conf = base / "pykata.toml"
    state_dir = f"{base}/run"
    conf.write_text(f'[runtime]\nstate_dir = "{state_dir}"\n[image]\ndir = "{image_dir}"\n')
    env = {"PYKATA_CONF_FILE": str(conf)}
    build_busybox_image(base / "busybox.tar")
    bundle = bundle_for_pykata(base, f"{image_dir}/rootfs/busybox")
    ctrd = Containerd(path_prepend=[os.path.dirname(sys.executable)], env=env).start()
    try:
        ctrd.import_image(base / "busybox.tar")
        legs: dict[str, Callable[[], float]] = {
            "runc": lambda: timed(lambda: ctrd.ctr("run", "--rm", IMAGE_REF, "b", "true")),
            "ctr+pykata": lambda: timed(lambda: ctrd.ctr(
                "run", "--rm", "--runtime", RUNTIME, IMAGE_REF, "b", "true", timeout=120)),
            "pykata run": lambda: timed(lambda: subprocess.run(
                [pykata, "run", "--bundle", str(bundle)], capture_output=True,
                env={**os.environ, **env}, stdin=subprocess.DEVNULL, timeout=120)),
        }
        for leg in legs.values():  # warm caches; not counted
            leg()
        samples: dict[str, list[float]] = {k: [] for k in legs}
        for _ in range(args.runs):
            for name, leg in legs.items():
                samples[name].append(leg())
        print(f"ctr run --rm IMAGE true, {os.cpu_count()} host CPUs, n={args.runs}, interleaved:")
        med = {}
        for name, s in samples.items():
            med[name] = statistics.median(s)
            print(f"  {name:<12} median {med[name] * 1000:7.0f} ms   "
                  f"min {min(s) * 1000:6.0f}  max {max(s) * 1000:6.0f}")
        over = med["ctr+pykata"] / med["pykata run"]
        print(f"  ratio  ctr+pykata / pykata run = {over:.3f}x  (goal <= 1.15x)")
        extra = (med["ctr+pykata"] - med["pykata run"]) * 1000
        print(f"  containerd + shim overhead     = {extra:.0f} ms"
              f"  (runc's whole ctr run: {med['runc'] * 1000:.0f} ms)")
        idle_pod_memory(ctrd, state_dir)
    finally:
        left = ctrd.stop()
        shutil.rmtree(base, ignore_errors=True)
        if left:
            print(f"left behind: {left}")


if __name__ == "__main__":
    main()
