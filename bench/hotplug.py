"""Hotplug benchmark: from `Sandbox.resize()` to the guest seeing the new CPU or memory.

Sandboxes of 1 vCPU / 512 MiB, one at a time. With virtio-mem, rounds interleave +512 MiB
and -512 MiB; with pc-dimm, +512 MiB (grows only: one more DIMM per round). CPUs: +1 vCPU
through resize(), interleaved with the bare QMP `device_add` of a CPU (the round trip
alone, QEMU's share, with no guest wait), each in a VM of its own: under TCG vCPUs are
never unplugged (QEMU 7.2 crashes on the next hotplug), and a 2-CPU host allows one more.
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
from collections.abc import Awaitable, Callable

from pykata.domain.config import Config
from pykata.domain.host import HostFacts
from pykata.domain.limits import Limits
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.host.qemu_caps import qemu_devices
from pykata.plan.hotplug import plan_hotplug
from pykata.plan.sizing import ResizeTarget
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
    """QMP device_add of one CPU, timed alone (QEMU's share); the guest then onlines it."""
    assert sandbox.vm is not None
    qmp, sizing = sandbox.vm.qmp, sandbox.plan.sizing
    state = await hotplug.read_state(qmp, 128)
    [add] = plan_hotplug(sizing, state, ResizeTarget(2, sandbox.size.memory_mib)).steps
    elapsed = await timed(hotplug.execute(qmp, add.command, add.arguments))
    await sandbox.agent.online_cpu_mem(2, 0, 30)
    return elapsed


async def in_fresh_vm(cfg: Config, facts: HostFacts, devices: frozenset[str],
                      measure: Callable[[Sandbox], Awaitable[float]]) -> float:
    """One sample in a VM of its own: under TCG a vCPU is never unplugged (QEMU 7.2 crashes
    on the next hotplug), and this 2-CPU host allows one hot-added vCPU per VM."""
    sandbox = Sandbox.from_parts(cfg, facts, devices=devices)
    try:
        await sandbox.start()
        await sandbox.resize([])  # the first resize asks the guest's block size: not counted
        return await measure(sandbox)
    finally:
        await sandbox.stop()


async def bench(cfg: Config, runs: int) -> dict[str, list[float]]:
    facts = read_host_facts()
    devices = qemu_devices(cfg.hypervisor.path, cfg.image.dir)
    vmem = Sandbox.from_parts(configure(cfg, True, runs), facts, devices=devices)
    dimm = Sandbox.from_parts(configure(cfg, False, runs), facts, devices=devices)
    assert vmem.plan.sizing.memory_hotplug == "virtio-mem", vmem.plan.sizing.reasons
    assert dimm.plan.sizing.memory_hotplug == "pc-dimm", dimm.plan.sizing.reasons
    out: dict[str, list[float]] = {k: [] for k in (
        "+1 vCPU", "bare QMP device_add (CPU)", "+512 MiB virtio-mem", "-512 MiB virtio-mem",
        "+512 MiB pc-dimm")}
    # One VM at a time: with two up, QEMU 7.2 (TCG) crashed on a CPU device_add.
    try:
        await vmem.start()
        await vmem.resize([])
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
    finally:
        await dimm.stop()
    cpu_cfg = configure(cfg, False, 1)
    for _ in range(runs):  # interleaved: a VM each
        out["+1 vCPU"].append(await in_fresh_vm(
            cpu_cfg, facts, devices, lambda sb: timed(sb.resize([CPU]))))
        out["bare QMP device_add (CPU)"].append(await in_fresh_vm(
            cpu_cfg, facts, devices, bare_device_add))
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
