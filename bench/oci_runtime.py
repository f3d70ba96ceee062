"""Guest OCI runtime benchmark: crun vs runc creating and starting a `true` container.

Builds (or reuses) one guest image per runtime, identical but for the runtime, then times
CreateContainer and StartContainer through the agent, interleaved; prints medians.

    python bench/oci_runtime.py [--runs 3] [--dir /var/lib/pykata-bench]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

from pykata.domain.config import Config
from pykata.domain.spec import default_spec, parse_spec
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.image.builder import BuildOptions, build_image
from pykata.sandbox.sandbox import Sandbox

RUNTIMES = ("crun", "runc")


async def one(cfg: Config, rootfs: str) -> tuple[float, float]:
    sandbox = Sandbox.from_parts(cfg, read_host_facts())
    try:
        await sandbox.start()
        spec = parse_spec(default_spec(["true"]), "bench")
        t0 = time.monotonic()
        await sandbox.create_container("c", spec, rootfs)
        t1 = time.monotonic()
        await sandbox.agent.close_stdin("c")
        await sandbox.agent.start_container("c")
        t2 = time.monotonic()
        await sandbox.agent.wait_process("c")
        return t1 - t0, t2 - t1
    finally:
        await sandbox.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/var/lib/pykata-bench", help="where the images go")
    args = ap.parse_args()
    base = load_config()
    configs = {}
    for runtime in RUNTIMES:
        image_dir = Path(args.dir) / runtime
        build_image(BuildOptions(dir=image_dir, oci_runtime=runtime),
                    lambda line: print(f"  {line}", file=sys.stderr))
        configs[runtime] = dataclasses.replace(
            base, image=dataclasses.replace(base.image, dir=str(image_dir)))
    rootfs = os.path.join(base.image.dir, "rootfs", "busybox")
    samples: dict[str, list[tuple[float, float]]] = {r: [] for r in RUNTIMES}
    for _ in range(args.runs):
        for runtime in RUNTIMES:
            samples[runtime].append(asyncio.run(one(configs[runtime], rootfs)))
    for runtime, rows in samples.items():
        create = statistics.median(r[0] for r in rows) * 1000
        start = statistics.median(r[1] for r in rows) * 1000
        print(f"{runtime}: create {create:.0f} ms, start {start:.0f} ms (median of {args.runs})")
    crun, runc = (statistics.median(sum(r) for r in samples[n]) for n in RUNTIMES)
    print(f"runc/crun (create + start) = {runc / crun:.2f}x")


if __name__ == "__main__":
    main()
