"""vCPU pinning benchmark: guest CPU throughput with pinning on and off, and the time to
re-place the vCPU threads after a container update.

Throughput: a 2-vCPU VM whose container has cpuset 0-1 (so with pinning on, vCPU i runs on
host CPU i only), running one CPU-bound busybox awk loop per vCPU; the guest times them
(/proc/uptime) and the figure is loop iterations per second, summed. Runs with pinning on and
off interleaved, each in a fresh VM. Re-pin: in one running sandbox, `Sandbox.resize()` of a
container whose cpuset changes 0-1 -> 1 -> 0-1 (no hotplug: the same vCPU count): QMP
thread read, cgroup writes, sched_setaffinity, in turn.

    python bench/pinning.py [--runs 5] [--config FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import tempfile
import time

from pykata.domain.config import Config
from pykata.domain.cpuset import CpuSet
from pykata.domain.limits import Limits
from pykata.domain.spec import default_spec, parse_spec
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.host.qemu_caps import qemu_devices
from pykata.sandbox.request import build_request, plan_sandbox
from pykata.sandbox.run import run_container
from pykata.sandbox.sandbox import Sandbox

ITERATIONS = 1_000_000
LOOP = ("read a _ < /proc/uptime; "
        f"for i in 1 2; do awk 'BEGIN {{ for (i = 0; i < {ITERATIONS}; i++) s += i }}' & done; "
        "wait; read b _ < /proc/uptime; echo $a $b")
POD = Limits(vcpus=2, cpuset=CpuSet.parse("0-1"))


def configure(cfg: Config, pinning: bool) -> Config:
    hv = dataclasses.replace(cfg.hypervisor, default_vcpus=2.0, default_maxvcpus=2,
                             default_memory=512)
    rt = dataclasses.replace(cfg.runtime, enable_vcpus_pinning=pinning)
    return dataclasses.replace(cfg, hypervisor=hv, runtime=rt)


async def throughput(cfg: Config) -> float:
    """Loop iterations per second over both vCPUs, timed in the guest."""
    spec = default_spec(["sh", "-c", LOOP])
    rootfs = os.path.join(cfg.image.dir, "rootfs", "busybox")
    spec["linux"]["resources"] = {"cpu": {"cpus": "0-1"}}
    with tempfile.TemporaryFile() as out:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            plan = plan_sandbox(build_request(spec, cfg=cfg, resizable=False))
            code = await run_container(plan, parse_spec(spec, "bench"), rootfs, False,
                                       lambda w: None, (null, out.fileno(), null))
        finally:
            os.close(null)
        out.seek(0)
        text = out.read().decode()
    if code != 0:
        raise SystemExit(f"guest loop failed ({code}): {text!r}")
    start, end = map(float, text.split())
    return 2 * ITERATIONS / (end - start)


async def repin_times(cfg: Config, runs: int) -> list[float]:
    sandbox = Sandbox.from_parts(cfg, read_host_facts(), devices=qemu_devices(cfg.hypervisor.path,
                                                                    cfg.image.dir))
    await sandbox.start()
    samples = []
    try:
        await sandbox.resize([POD])
        for i in range(runs * 2):
            cpus = "1" if i % 2 == 0 else "0-1"
            t0 = time.monotonic()
            await sandbox.resize([dataclasses.replace(POD, cpuset=CpuSet.parse(cpus))])
            samples.append(time.monotonic() - t0)
    finally:
        await sandbox.stop()
    return samples


def show(name: str, values: list[float], unit: str, scale: float = 1.0) -> None:
    print(f"  {name:<30} median {statistics.median(values) * scale:10.1f} {unit}   "
          f"min {min(values) * scale:10.1f}   max {max(values) * scale:10.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--config", default=None)
    args = ap.parse_args()
    cfg = load_config(args.config)
    on, off = configure(cfg, True), configure(cfg, False)
    samples: dict[str, list[float]] = {"pinning on": [], "pinning off": []}
    for _ in range(args.runs):  # interleaved: machine noise hits both alike
        samples["pinning on"].append(asyncio.run(throughput(on)))
        samples["pinning off"].append(asyncio.run(throughput(off)))
    print(f"pinning: {os.cpu_count()} host CPUs, 2 vCPUs, cpuset 0-1, {args.runs} runs each, "
          f"2 x {ITERATIONS:,} awk iterations per run")
    for name, values in samples.items():
        show(f"throughput, {name}", values, "iter/s")
    ratio = statistics.median(samples["pinning on"]) / statistics.median(samples["pinning off"])
    print(f"  ratio on / off = {ratio:.2f}x")
    show("re-pin after a cpuset update", asyncio.run(repin_times(on, args.runs)), "ms", 1000)


if __name__ == "__main__":
    main()
