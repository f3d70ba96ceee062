"""Hotplug benchmark: from `Sandbox.resize()` to the guest seeing the new CPU or memory.

Two sandboxes (1 vCPU / 512 MiB), one after the other. With virtio-mem, rounds interleave
+512 MiB and -512 MiB; with pc-dimm, +512 MiB (grows only: one more DIMM per round),
+1 vCPU, -1 vCPU and the bare QMP `device_add` of a CPU (the round trip alone,
QEMU's share, with no guest wait; then the CPU is onlined and removed, not timed).
Medians, min and max; the ratio is resize(+1 vCPU) over the bare device_add.

    python bench/hotplug.py [--runs 10] [--config FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import time
from collections.abc import Awaitable

from pykata.domain.config import Config
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.host.qemu_caps import qemu_devices
from pykata.plan.hotplug import plan_hotplug
from pykata.plan.sizing import Limits, ResizeTarget
from pykata.sandbox.sandbox import Sandbox
from pykata.vmm import hotplug

BOOT_MIB = 512
STEP = Limits(memory_mib=512)
CPU = Limits(vcpus=1)


def configure(cfg: Config, virtio_mem: bool, runs: int) -> Config:
    hv = dataclasses.replace(cfg.hypervisor, default_vcpus=1.0, default_memory=BOOT_MIB,
                             default_maxvcpus=2, enable_virtio_mem=virtio_mem,
                             memory_slots=max(runs, 1),
                             default_maxmemory=BOOT_MIB + 512 * max(runs, 1))
    return dataclasses.replace(cfg, hypervisor=hv)


async def timed(call: Awaitable[object]) -> float:
    t0 = time.monotonic()
    await call
    return time.monotonic() - t0


async def bare_device_add(sandbox: Sandbox) -> float:
    """QMP device_add of one CPU, timed alone; then the guest onlines it and it leaves."""
    assert sandbox.vm is not None
    qmp, sizing = sandbox.vm.qmp, sandbox.plan.sizing
    state = await hotplug.read_state(qmp, 128)
    [add] = plan_hotplug(sizing, state, ResizeTarget(2, sandbox.size.memory_mib)).steps
    elapsed = await timed(hotplug.execute(qmp, add.command, add.arguments))
    await sandbox.agent.online_cpu_mem(2, 0, 30)
    await hotplug.execute(qmp, "device_del", {"id": add.arguments["id"]})
    await sandbox.agent.online_cpu_mem(1, 0, 30)
    return elapsed


async def bench(cfg: Config, runs: int) -> dict[str, list[float]]:
    facts = read_host_facts()
    devices = qemu_devices(cfg.hypervisor.path, cfg.image.dir)
    vmem = Sandbox(configure(cfg, True, runs), facts, devices=devices)
    dimm = Sandbox(configure(cfg, False, runs), facts, devices=devices)
    assert vmem.plan.sizing.memory_hotplug == "virtio-mem", vmem.plan.sizing.reasons
    assert dimm.plan.sizing.memory_hotplug == "pc-dimm", dimm.plan.sizing.reasons
    out: dict[str, list[float]] = {k: [] for k in (
        "+1 vCPU", "-1 vCPU", "+512 MiB virtio-mem", "-512 MiB virtio-mem",
        "+512 MiB pc-dimm", "bare QMP device_add (CPU)")}
    # One VM at a time: with both up, QEMU 7.2 (TCG) crashed on the first CPU device_add
    # with heap corruption ("corrupted size vs. prev_size") in 3 of 3 tries.
    try:
        await vmem.start()
        await vmem.resize([])  # the first resize asks the guest's block size: not counted
        for _ in range(runs):
            out["+512 MiB virtio-mem"].append(await timed(vmem.resize([STEP])))
            out["-512 MiB virtio-mem"].append(await timed(vmem.resize([])))
    finally:
        await vmem.stop()
    try:
        await dimm.start()
        await dimm.resize([])
        for i in range(runs):
            grown = await timed(dimm.resize([Limits(memory_mib=512 * (i + 1))]))
            out["+512 MiB pc-dimm"].append(grown)
            grown_to = Limits(memory_mib=512 * (i + 1))
            out["+1 vCPU"].append(await timed(dimm.resize([grown_to, CPU])))
            out["-1 vCPU"].append(await timed(dimm.resize([grown_to])))
            out["bare QMP device_add (CPU)"].append(await bare_device_add(dimm))
    finally:
        await dimm.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--config", help="pykata configuration file")
    args = ap.parse_args()
    cfg = load_config(args.config)
    samples = asyncio.run(bench(cfg, args.runs))
    print(f"hotplug: {os.cpu_count()} host CPUs, boot 1 vCPU / {BOOT_MIB} MiB, "
          f"{args.runs} interleaved rounds; resize() until the guest sees it")
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"  {name:<27} median {med * 1000:8.1f} ms   min {min(values) * 1000:7.1f}"
              f"  max {max(values) * 1000:7.1f}")
    ratio = (statistics.median(samples["+1 vCPU"])
             / statistics.median(samples["bare QMP device_add (CPU)"]))
    print(f"  ratio resize(+1 vCPU) / bare device_add = {ratio:.1f}x")


if __name__ == "__main__":
    main()
