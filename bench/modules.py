"""What the on-demand kernel modules cost: the guest image with them (as built) against the
same image built without them, side by side: initramfs size, and `pykata run -- true` from
start to exit, interleaved, medians; then the first `ip link add type bridge` (modprobe of
bridge, stp, llc) against a second one.

    python bench/modules.py [--runs 7]

The image without them is built into a temporary directory that shares the package cache.
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
from pathlib import Path

from pykata.domain.spec import default_spec
from pykata.host.config_files import load_config
from pykata.image.builder import BuildOptions, build_image


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                       timeout=120)
    if r.returncode != 0:
        sys.exit(f"{argv} failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    return time.monotonic() - t0


def report(name: str, samples: list[float]) -> float:
    med = statistics.median(samples)
    print(f"  {name:<22} median {med * 1000:6.0f} ms  min {min(samples) * 1000:6.0f}  "
          f"max {max(samples) * 1000:6.0f}  (n={len(samples)})")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    cfg = load_config(None)
    image = Path(cfg.image.dir)
    pykata = shutil.which("pykata") or sys.exit("pykata is not on PATH")
    with tempfile.TemporaryDirectory(prefix="pk-nomod-", dir="/var/tmp") as tmp:
        bare = Path(tmp)
        (bare / "cache").symlink_to(image / "cache")
        build_image(BuildOptions(dir=bare, on_demand=(), on_demand_dirs=()), lambda _: None)
        envs = {}
        for name, initrd in (("with modules", image / "image/initramfs.img"),
                             ("without modules", bare / "image/initramfs.img")):
            conf = bare / f"{name.replace(' ', '-')}.toml"
            conf.write_text(f'[hypervisor.qemu]\ninitrd = "{initrd}"\n'
                            f'[image]\ndir = "{image}"\n')
            envs[name] = dict(os.environ, PYKATA_CONF_FILE=str(conf))
            print(f"  initramfs {name:<16} {initrd.stat().st_size / 2**20:6.1f} MiB")
        run = [pykata, "run", "--", "true"]
        samples: dict[str, list[float]] = {k: [] for k in envs}
        for env in envs.values():  # warm the page cache; not counted
            timed(run, env)
        for _ in range(args.runs):
            for name, env in envs.items():
                samples[name].append(timed(run, env))
    print(f"pykata run -- true, {os.cpu_count()} host CPUs, accel as configured:")
    with_ = report("with modules", samples["with modules"])
    without = report("without modules", samples["without modules"])
    print(f"  ratio with/without = {with_ / without:.3f}x")
    first, second = [], []
    for _ in range(args.runs):
        a, b, c = bridge_times(pykata, image)
        first.append(b - a)
        second.append(c - b)
    print("ip link add type bridge in a fresh VM (guest clock, 10 ms resolution):")
    report("first (modprobe)", first)
    report("second", second)


def bridge_times(pykata: str, image: Path) -> list[float]:
    """Guest uptimes around two `ip link add type bridge`, the first loading the module."""
    script = ("t() { cut -d' ' -f1 /proc/uptime; }; a=$(t); ip link add b0 type bridge; "
              "b=$(t); ip link add b1 type bridge; c=$(t); echo $a $b $c")
    spec = default_spec(["sh", "-c", script], root_path=str(image / "rootfs/busybox"))
    caps = spec["process"]["capabilities"]
    for kind in ("bounding", "effective", "permitted"):
        caps[kind] = sorted({*caps.get(kind, []), "CAP_NET_ADMIN"})
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"]
                                   if n["type"] != "network"]
    with tempfile.TemporaryDirectory() as bundle:
        Path(bundle, "config.json").write_text(json.dumps(spec))
        out = subprocess.run([pykata, "run", "--bundle", bundle], capture_output=True,
                             timeout=120, check=True).stdout
    return [float(x) for x in out.split()]


if __name__ == "__main__":
    main()
