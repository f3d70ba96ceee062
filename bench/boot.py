"""Boot benchmark: `pykata run -- true` against the floor, interleaved, medians and ratio.

The floor is the same kernel and initramfs booted by bare QEMU (same machine, accelerator,
vCPUs and memory) with rdinit=/pykata-floor, a busybox script that powers off at once.
Then a breakdown of where pykata's time goes (host phases and the guest's boot timeline).

    python bench/boot.py [--runs 7] [--config FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from pykata.domain.config import Config
from pykata.domain.spec import default_spec, parse_spec
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.plan import qemu
from pykata.plan.vm import VmPlan, plan_vm
from pykata.sandbox.sandbox import Sandbox


def floor_argv(plan: VmPlan) -> list[str]:
    options: list[qemu.QemuOption] = [
        qemu.Base(name="pykata-floor"),
        qemu.Machine(plan.machine_type, memory_backend="mem0", extra=plan.machine_extra),
        qemu.Accel(plan.accel, plan.tb_size_mib),
        qemu.Smp(plan.vcpus, plan.vcpus),
        qemu.Memory(plan.memory_mib),
        qemu.MemfdBackend("mem0", plan.memory_mib),
        qemu.DirectBoot(plan.kernel, plan.initrd,
                        " ".join(p if p != "rdinit=/init" else "rdinit=/pykata-floor"
                                 for p in plan.kernel_params)),
        qemu.SerialConsole("/dev/null"),
    ]
    return qemu.build_argv(plan.binary, options)


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                       timeout=120)
    elapsed = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    return elapsed


async def phases(cfg: Config, rootfs: str) -> dict[str, float]:
    """One sandbox through the Python API, each phase timed (seconds)."""
    spec = parse_spec(default_spec(["true"]), "bench")
    out: dict[str, float] = {}
    sandbox = Sandbox.from_parts(cfg, read_host_facts())
    mark = time.monotonic()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        out[name] = now - mark
        mark = now

    try:
        await sandbox.start()
        lap("host: start sandbox (QEMU up, guest boot, agent, CreateSandbox)")
        details = await sandbox.agent.guest_details()
        out["guest: kernel boot to agent main()"] = details.agent_started_uptime
        out["guest: agent main() to serving"] = (details.agent_serving_uptime
                                                 - details.agent_started_uptime)
        mark = time.monotonic()
        await sandbox.create_container("c", spec, rootfs)
        lap("host: CreateContainer (bind mount, runtime create)")
        await sandbox.agent.close_stdin("c")
        await sandbox.agent.start_container("c")
        lap("host: StartContainer")
        await sandbox.agent.wait_process("c")
        lap("host: WaitProcess (`true` runs and exits)")
    finally:
        await sandbox.stop()
    lap("host: stop sandbox (QEMU quit, virtiofsd exit, unmount)")
    return out


def report(name: str, samples: list[float]) -> float:
    med = statistics.median(samples)
    print(f"  {name:<10} median {med * 1000:7.0f} ms   "
          f"min {min(samples) * 1000:6.0f}  max {max(samples) * 1000:6.0f}  (n={len(samples)})")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--config", help="pykata configuration file")
    args = ap.parse_args()
    cfg = load_config(args.config)
    plan = plan_vm(cfg, read_host_facts(), "bench", "/tmp")
    env = dict(os.environ, **({"PYKATA_CONF_FILE": args.config} if args.config else {}))
    pykata = shutil.which("pykata") or sys.exit("pykata is not on PATH")
    legs: dict[str, Callable[[], float]] = {
        "floor": lambda: timed(floor_argv(plan), env),
        "pykata": lambda: timed([pykata, "run", "--", "true"], env),
    }
    samples: dict[str, list[float]] = {k: [] for k in legs}
    for leg in legs.values():  # warm the page cache; not counted
        leg()
    for _ in range(args.runs):
        for name, leg in legs.items():
            samples[name].append(leg())
    print(f"boot: accel {plan.accel}, {plan.vcpus} vCPU, {plan.memory_mib} MiB, "
          f"{os.cpu_count()} host CPUs")
    floor = report("floor", samples["floor"])
    ours = report("pykata", samples["pykata"])
    print(f"  ratio      pykata/floor = {ours / floor:.2f}x  (goal <= 2.0x; long-run 1.1x)")
    rootfs = os.path.join(cfg.image.dir, "rootfs", "busybox")
    runs = [asyncio.run(phases(cfg, rootfs)) for _ in range(3)]
    print("breakdown (median of 3, through the Python API):")
    for key in runs[0]:
        print(f"  {statistics.median(r[key] for r in runs) * 1000:7.0f} ms  {key}")


if __name__ == "__main__":
    main()
