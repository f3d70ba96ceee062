"""Monitor benchmark: one scrape of `pykata monitor` with 1, 4 and 8 running pods.

Pods are idle busybox `sleep`s started through a private containerd (`ctr run -d`, clones
of the template) with a state dir of their own; one `pykata monitor` serves them on a
loopback port. For each pod count it takes --scrapes scrapes (after one warm-up) and
reports the wall time of a scrape (median, min, max) and the CPU time the monitor and the
shims (which ask their agents) spent per scrape, from /proc. Everything started is stopped
by pid at the end. Kata's anchor, kata-monitor, is not installed here.

    python bench/monitor.py [--scrapes 10] [--pods 1,4,8]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from boot import write_config
from containerd_support import IMAGE_REF, Containerd, build_busybox_image

from pykata.host.config_files import config_path
from pykata.host.procstat import parse_stat
from pykata.sandbox.leftovers import read_owner
from pykata.sandbox.metrics import sandbox_ids

RUNTIME = "io.containerd.pykata.v2"


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            user, system, _ = parse_stat(f.read())
    except OSError:
        return 0.0
    return user + system


def shim_pids(state_root: str) -> list[int]:
    owners = (read_owner(os.path.join(state_root, i)) for i in sandbox_ids(state_root))
    return sorted({o[0] for o in owners if o})


def scrape(url: str) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=30) as reply:
        reply.read()
    return time.monotonic() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scrapes", type=int, default=10)
    ap.add_argument("--pods", default="1,4,8", help="pod counts, ascending")
    ap.add_argument("--config", help="pykata configuration file (the base)")
    args = ap.parse_args()
    counts = [int(n) for n in args.pods.split(",")]
    with contextlib.ExitStack() as cleanup:
        base = Path(tempfile.mkdtemp(prefix="pkm-", dir="/tmp"))  # short: sockets below
        cleanup.callback(shutil.rmtree, base, ignore_errors=True)
        build_busybox_image(base / "busybox.tar")
        state = base / "run"
        conf = write_config(config_path(args.config)[0], base / "conf",
                            f'[runtime]\nstate_dir = "{state}"\n')
        env = dict(os.environ, PYKATA_CONF_FILE=str(conf))
        ctrd = Containerd(path_prepend=[os.path.dirname(sys.executable)],
                          env={"PYKATA_CONF_FILE": str(conf)}).start()
        cleanup.callback(ctrd.stop)
        ctrd.import_image(base / "busybox.tar")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        monitor = subprocess.Popen(
            [sys.executable, "-m", "pykata.cli.main", "monitor", "--listen",
             f"127.0.0.1:{port}"], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        cleanup.callback(monitor.wait, 10)
        cleanup.callback(monitor.terminate)
        assert monitor.stdout is not None
        monitor.stdout.readline()
        url = f"http://127.0.0.1:{port}/metrics"
        names: list[str] = []
        cleanup.callback(ctrd.remove_tasks, names)
        print(f"monitor: one scrape of `pykata monitor`, {args.scrapes} scrapes per pod count "
              f"(medians; {os.cpu_count()} host CPUs, TCG guests)")
        for count in counts:
            while len(names) < count:
                names.append(f"m{len(names)}")
                ctrd.ctr("run", "-d", "--runtime", RUNTIME, IMAGE_REF, names[-1], "sleep",
                         "100000", timeout=300)
            time.sleep(2.0)
            scrape(url)  # warm-up: the first asks every agent afresh
            shims = shim_pids(str(state))
            cpu_before = cpu_seconds(monitor.pid), sum(cpu_seconds(p) for p in shims)
            walls = [scrape(url) for _ in range(args.scrapes)]
            cpu_after = cpu_seconds(monitor.pid), sum(cpu_seconds(p) for p in shims)
            mon_ms = (cpu_after[0] - cpu_before[0]) / args.scrapes * 1000
            shim_ms = (cpu_after[1] - cpu_before[1]) / args.scrapes * 1000
            print(f"  {count} pods ({len(shims)} shims): scrape median "
                  f"{statistics.median(walls) * 1000:6.1f} ms (min {min(walls) * 1000:.1f}, "
                  f"max {max(walls) * 1000:.1f}); CPU per scrape: monitor {mon_ms:.1f} ms, "
                  f"shims {shim_ms:.1f} ms")


if __name__ == "__main__":
    main()
