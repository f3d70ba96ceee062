"""Boot benchmark: `pykata run -- true` against the floor, interleaved, medians and ratio.
Its VM boots cold (templating off in a copy of the configuration).

The floor is the same kernel and initramfs booted by bare QEMU (same machine, accelerator,
vCPUs and memory) with rdinit=/pykata-floor, a busybox script that powers off at once.
Then a breakdown of where pykata's time goes (host phases and the guest's boot timeline).

With --template, VM templating too (`[factory] enable_template`, a template in a temp dir):
the floor, a cold `pykata run -- true`, a templated one, and `ctr run --rm` through a
private containerd whose shim clones the same template; then the PSS of an idle clone's
QEMU against an idle cold-booted one's, and the templated start's phases. The temp dir, the
template and every process started are removed at the end, also on error.

    python bench/boot.py [--runs 7] [--config FILE] [--template]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pykata.domain.config import Config
from pykata.domain.errors import PykataError
from pykata.domain.spec import Spec, default_spec, parse_spec
from pykata.host.config_files import DROPIN_DIR, config_path, dropins, load_config
from pykata.host.facts import read_host_facts
from pykata.host.qemu_caps import qemu_devices
from pykata.plan import qemu
from pykata.plan.sandbox import plan_sandbox
from pykata.plan.vm import VmPlan, plan_vm
from pykata.sandbox import factory
from pykata.sandbox.effects import RealEffects
from pykata.sandbox.request import build_request, request_from_parts
from pykata.sandbox.sandbox import Sandbox

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from containerd_support import (  # type: ignore[import-not-found, unused-ignore]
    IMAGE_REF,
    Containerd,
    build_busybox_image,
    missing_reason,
)

RUNTIME = "io.containerd.pykata.v2"
SETTLE_S = 2.0  # an idle VM's boot-time allocations settle before its PSS is read


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
    return timed_stderr(argv, env)[0]


def timed_stderr(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                       timeout=120)
    elapsed = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    return elapsed, r.stderr.decode(errors="replace")


async def phases(cfg: Config, rootfs: str) -> dict[str, float]:
    """One sandbox through the Python API, each phase timed (seconds)."""
    spec = parse_spec(default_spec(["true"]), "bench")
    sandbox = Sandbox.from_parts(cfg, read_host_facts())
    lap = Laps()
    try:
        await sandbox.start()
        lap("host: start sandbox (QEMU up, guest boot, agent, CreateSandbox)")
        details = await sandbox.agent.guest_details()
        lap.out["guest: kernel boot to agent main()"] = details.agent_started_uptime
        lap.out["guest: agent main() to serving"] = (details.agent_serving_uptime
                                                     - details.agent_started_uptime)
        lap.restart()
        await run_true(sandbox, spec, rootfs, lap)
    finally:
        await sandbox.stop()
    lap("host: stop sandbox (QEMU quit, virtiofsd exit, unmount)")
    return lap.out


class Laps:
    """Seconds between marks, by name: each lap runs from the last mark."""

    def __init__(self) -> None:
        self.out: dict[str, float] = {}
        self.restart()

    def restart(self) -> None:
        self.mark = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.out[name] = now - self.mark
        self.mark = now


async def run_true(sandbox: Sandbox, spec: Spec, rootfs: str,
                   lap: Callable[[str], None]) -> None:
    await sandbox.create_container("c", spec, rootfs)
    lap("host: CreateContainer (bind mount, runtime create)")
    await sandbox.agent.close_stdin("c")
    await sandbox.agent.start_container("c")
    lap("host: StartContainer")
    await sandbox.agent.wait_process("c")
    lap("host: WaitProcess (`true` runs and exits)")


def interleaved(legs: dict[str, Callable[[], float]], runs: int) -> dict[str, list[float]]:
    """One warm-up of each leg (not counted: it warms the page cache, and the templated
    leg's makes the template), then `runs` rounds of one sample of each."""
    for leg in legs.values():
        leg()
    samples: dict[str, list[float]] = {k: [] for k in legs}
    for _ in range(runs):
        for name, leg in legs.items():
            samples[name].append(leg())
    return samples


def report(name: str, samples: list[float]) -> float:
    med = statistics.median(samples)
    print(f"  {name:<10} median {med * 1000:7.0f} ms   "
          f"min {min(samples) * 1000:6.0f}  max {max(samples) * 1000:6.0f}  (n={len(samples)})")
    return med


def print_breakdown(runs: list[dict[str, float]], title: str) -> None:
    print(f"{title} (median of {len(runs)}, through the Python API):")
    for key in runs[0]:
        print(f"  {statistics.median(r[key] for r in runs) * 1000:7.0f} ms  {key}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--config", help="pykata configuration file")
    ap.add_argument("--template", action="store_true",
                    help="also VM templating: templated pykata run and ctr run, idle PSS")
    args = ap.parse_args()
    pykata = shutil.which("pykata") or sys.exit("pykata is not on PATH")
    with contextlib.ExitStack() as cleanup:
        base = Path(tempfile.mkdtemp(prefix="pkbt-", dir="/tmp"))  # short: sockets below
        cleanup.callback(shutil.rmtree, base, ignore_errors=True)
        # The cold legs boot cold whatever the configuration says about templating.
        cold = write_config(config_path(args.config)[0], base / "cold",
                            "[factory]\nenable_template = false\n")
        cfg = load_config(str(cold))
        plan = plan_vm(cfg, read_host_facts(), "bench", "/tmp")
        env = dict(os.environ, PYKATA_CONF_FILE=str(cold))
        if args.template:
            template_main(args, base, cfg, plan, env, pykata)
        else:
            cold_main(args, cfg, plan, env, pykata)


def cold_main(args: argparse.Namespace, cfg: Config, plan: VmPlan, env: dict[str, str],
              pykata: str) -> None:
    legs: dict[str, Callable[[], float]] = {
        "floor": lambda: timed(floor_argv(plan), env),
        "pykata": lambda: timed([pykata, "run", "--", "true"], env),
    }
    samples = interleaved(legs, args.runs)
    print(f"boot: accel {plan.accel}, {plan.vcpus} vCPU, {plan.memory_mib} MiB, "
          f"{os.cpu_count()} host CPUs")
    floor = report("floor", samples["floor"])
    ours = report("pykata", samples["pykata"])
    print(f"  ratio      pykata/floor = {ours / floor:.2f}x  (goal <= 2.0x; long-run 1.1x)")
    rootfs = os.path.join(cfg.image.dir, "rootfs", "busybox")
    print_breakdown([asyncio.run(phases(cfg, rootfs)) for _ in range(3)], "breakdown")


# --- --template ---------------------------------------------------------------------------


def template_main(args: argparse.Namespace, base: Path, cfg: Config, plan: VmPlan,
                  env: dict[str, str], pykata: str) -> None:
    why = missing_reason()
    if why:
        sys.exit(f"--template needs a private containerd: {why}")
    # Cleanup runs in reverse order, every step even when one before it fails.
    with contextlib.ExitStack() as cleanup:
        template_dir = str(base / "template")
        cleanup.callback(lambda: asyncio.run(factory.destroy(template_dir)))
        conf = write_config(config_path(args.config)[0], base / "tmpl",
                            f'[factory]\nenable_template = true\n'
                            f'template_path = "{template_dir}"\n')
        cfg_t = load_config(str(conf))
        env_t = dict(os.environ, PYKATA_CONF_FILE=str(conf))
        build_busybox_image(base / "busybox.tar")
        ctrd = Containerd(path_prepend=[os.path.dirname(sys.executable)],
                          env={"PYKATA_CONF_FILE": str(conf)}).start()
        cleanup.callback(stop_containerd, ctrd)
        ctrd.import_image(base / "busybox.tar")
        bundle = ctr_bundle(base, os.path.join(cfg.image.dir, "rootfs", "busybox"))
        boot_times(args.runs, plan, (cfg, env), (cfg_t, env_t), pykata, ctrd, bundle)
        idle_pss(pykata, env, env_t)
        rootfs = os.path.join(cfg.image.dir, "rootfs", "busybox")
        print_breakdown([asyncio.run(phases(cfg, rootfs)) for _ in range(3)],
                        "cold breakdown")
        print_clone_breakdown([asyncio.run(clone_phases(cfg_t, rootfs)) for _ in range(3)])


def stop_containerd(ctrd: Containerd) -> None:
    left = ctrd.stop()
    if left:
        print(f"left behind in containerd (now removed): {left}")


def ctr_bundle(base: Path, rootfs: str) -> Path:
    """A bundle with ctr's spec running `true` in the demo rootfs: `pykata run` of it boots
    the VM `ctr run` gets. `ctr run` adds cpu shares 1024 to `ctr oci spec` (read from a
    running task's config.json), which make it 2 vCPUs: a clone gets the second by hotplug."""
    spec = ctr_spec()
    spec["process"].update(args=["true"], terminal=False,
                           env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    spec["root"] = {"path": rootfs, "readonly": True}
    spec["linux"].setdefault("resources", {})["cpu"] = {"shares": 1024}
    bundle = base / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def boot_times(runs: int, plan: VmPlan, cold: tuple[Config, dict[str, str]],
               templated: tuple[Config, dict[str, str]], pykata: str, ctrd: Containerd,
               bundle: Path) -> None:
    """The legs, interleaved; medians, ratios, and how each VM booted."""
    fallbacks: list[str] = []  # templated `pykata run`s that booted cold after all
    legs: dict[str, Callable[[], float]] = {
        "floor": lambda: timed(floor_argv(plan), cold[1]),
        "cold": lambda: timed([pykata, "run", "--", "true"], cold[1]),
        "template": lambda: timed_clone([pykata, "run", "--", "true"], templated[1], fallbacks),
        "tmpl-ctrspec": lambda: timed_clone([pykata, "run", "--bundle", str(bundle)],
                                            templated[1], fallbacks),
        "ctr+tmpl": lambda: timed_ctr(ctrd),
    }
    samples = interleaved(legs, runs)
    ctr_clones, ctr_boots = shim_clones(ctrd)
    print(f"boot with VM templating: {machine(plan)}")
    print(f"  VMs: {boot_line('cold run', cold[0], default_spec(['true']))}")
    print(f"       {boot_line('templated run', templated[0], default_spec(['true']))}")
    ctr_doc = json.loads((bundle / "config.json").read_text())
    print(f"       {boot_line('ctr run, and tmpl-ctrspec', templated[0], ctr_doc)}")
    print_template_results(samples)
    print(f"  templated runs that booted cold after all: {len(fallbacks)}"
          + "".join(f"\n    {why}" for why in fallbacks))
    print(f"  ctr runs whose shim cloned (QEMU with -incoming in containerd's log): "
          f"{ctr_clones} of {ctr_boots} (warm-up included)")


def write_config(main: Path, where: Path, toml: str) -> Path:
    """The base configuration (its main file and drop-ins, copied into `where`) with `toml`
    as one more drop-in, applied last."""
    where.mkdir()
    conf = where / "pykata.toml"
    shutil.copyfile(main, conf)
    dropin_dir = where / DROPIN_DIR
    dropin_dir.mkdir()
    for path in dropins(main)[0]:
        shutil.copyfile(path, dropin_dir / path.name)
    (dropin_dir / "zzzz-bench.toml").write_text(toml)
    return conf


def timed_clone(argv: list[str], env: dict[str, str], fallbacks: list[str]) -> float:
    """A templated run, timed; a fall-back to a cold boot (pykata warns) is recorded."""
    elapsed, stderr = timed_stderr(argv, env)
    fallbacks += [line.strip() for line in stderr.splitlines() if "booting cold" in line]
    return elapsed


def shim_clones(ctrd: Containerd) -> tuple[int, int]:
    """(clones, boots) of the ctr runs' sandboxes so far, from the shims' QEMU argv in
    containerd's log (debug level)."""
    lines = [line for line in ctrd.log_path.read_text(errors="replace").splitlines()
             if "qemu argv" in line and "'pykata-b'" in line]
    return sum("-incoming" in line for line in lines), len(lines)


def timed_ctr(ctrd: Containerd) -> float:
    t0 = time.monotonic()
    ctrd.ctr("run", "--rm", "--runtime", RUNTIME, IMAGE_REF, "b", "true", timeout=120)
    return time.monotonic() - t0


def machine(plan: VmPlan) -> str:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return (f"{os.cpu_count()} host CPUs ({model}), accel {plan.accel}, "
            f"guest {plan.vcpus} vCPU, {plan.memory_mib} MiB")


def ctr_spec() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(subprocess.run(
        ["ctr", "oci", "spec"], capture_output=True, check=True, timeout=30).stdout)
    return doc


def boot_line(name: str, cfg: Config, doc: dict[str, Any]) -> str:
    """How the VM for `doc` boots under `cfg`, as the CLI and the shim plan it."""
    try:
        vm = plan_sandbox(build_request(doc, cfg=cfg, resizable=False,
                                        host_namespaces=True)).vm
    except PykataError as exc:
        return f"{name}: cannot plan: {exc}"
    grow = f", grows to {vm.grow_to[0]} vCPUs, {vm.grow_to[1]} MiB" if vm.grow_to else ""
    return (f"{name}: {vm.boot}, {vm.sizing.vcpus} vCPUs, {vm.sizing.memory_mib} MiB"
            f"{grow} ({vm.boot_reason})")


def print_template_results(samples: dict[str, list[float]]) -> None:
    med = {name: report(name, s) for name, s in samples.items()}
    print(f"  ratio      template/floor = {med['template'] / med['floor']:.2f}x"
          "  (goal <= 0.8x)")
    print(f"  ratio      ctr+tmpl/tmpl-ctrspec = {med['ctr+tmpl'] / med['tmpl-ctrspec']:.2f}x"
          "  (goal <= 1.2x; the same VM: ctr's spec, 2 vCPUs)")
    print(f"  ratio      ctr+tmpl/template = {med['ctr+tmpl'] / med['template']:.2f}x"
          "  (ctr's VM has one more vCPU, hot-plugged)")
    print(f"  ratio      cold/floor = {med['cold'] / med['floor']:.2f}x")
    print(f"  ratio      template/cold = {med['template'] / med['cold']:.2f}x")


# --- idle PSS -----------------------------------------------------------------------------


IDLE_CMD = ["sh", "-c", "trap 'exit 0' TERM; echo up; sleep 300 & wait"]


@dataclass(frozen=True)
class IdleVm:
    """KiB: QEMU's RSS and PSS, what its memfds hold (guest RAM, mapped or not) and how
    much of that QEMU maps, and the PSS of the virtiofsd processes."""

    qemu_rss: int
    qemu_pss: int
    memfd: int
    memfd_mapped: int
    virtiofsd_pss: int

    @property
    def total(self) -> int:
        """QEMU's PSS and the guest RAM it does not map: a clone's RAM is written into its
        memfd by pykata, so pages the guest has not touched since count in no PSS."""
        return self.qemu_pss + max(0, self.memfd - self.memfd_mapped)


def idle_pss(pykata: str, env: dict[str, str], env_t: dict[str, str]) -> None:
    """An idle cold-booted VM, then an idle clone (one at a time)."""
    print(f"idle VM (`pykata run -- sh` waiting, {SETTLE_S:g} s after it runs), "
          "from /proc/<pid>/smaps and QEMU's memfds:")
    rows = {}
    for name, e in (("cold", env), ("clone", env_t)):
        vm = rows[name] = idle_vm(pykata, e)
        print(f"  {name:<6} QEMU PSS {vm.qemu_pss / 1024:6.1f} MiB (RSS {vm.qemu_rss / 1024:6.1f})"
              f"   guest RAM memfd {vm.memfd / 1024:6.1f} MiB"
              f" ({vm.memfd_mapped / 1024:6.1f} mapped)"
              f"   QEMU PSS + unmapped RAM {vm.total / 1024:6.1f} MiB"
              f"   virtiofsd PSS {vm.virtiofsd_pss / 1024:5.1f} MiB")
    clone, cold = rows["clone"], rows["cold"]
    print(f"  ratio  clone/cold QEMU PSS = {clone.qemu_pss / cold.qemu_pss:.2f}x"
          f"   QEMU PSS + unmapped RAM = {clone.total / cold.total:.2f}x")


def idle_vm(pykata: str, env: dict[str, str]) -> IdleVm:
    """The memory of one idle `pykata run`; the run is stopped (SIGTERM, forwarded to the
    container, which exits) before this returns."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([pykata, "run", "--", *IDLE_CMD], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, env=env)
        qemu_pid = 0
        try:
            wait_for_line(proc, b"up", err, timeout=120)
            qemu_pids = [p for p in descendants(proc.pid)
                         if program(p).startswith("qemu-system")]
            if len(qemu_pids) != 1:
                raise RuntimeError(f"pykata run {proc.pid}: QEMU processes {qemu_pids}")
            qemu_pid = qemu_pids[0]
            time.sleep(SETTLE_S)
            fs = sum(rss_pss_kib(p)[1] for p in descendants(proc.pid)
                     if program(p) == "virtiofsd")
            return IdleVm(*rss_pss_kib(qemu_pid), memfd_kib(qemu_pid),
                          memfd_mapped_kib(qemu_pid), fs)
        finally:
            stop_run(proc, qemu_pid)


def wait_for_line(proc: subprocess.Popen[bytes], want: bytes, err: IO[bytes],
                  timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if select.select([proc.stdout], [], [], left)[0]:
            line = proc.stdout.readline()
            if line.strip() == want:
                return
            if not line:
                err.seek(0)
                raise RuntimeError(f"pykata run exited ({proc.wait()}) before the container "
                                   f"ran: {err.read().decode(errors='replace')[-2000:]}")
    raise TimeoutError(f"pykata run {proc.pid}: no {want!r} in {timeout:g} s")


def stop_run(proc: subprocess.Popen[bytes], qemu_pid: int) -> None:
    """SIGTERM to the `pykata run` this started, then wait; SIGKILL it if it hangs (its QEMU
    dies with it: PR_SET_PDEATHSIG), and QEMU by pid if it is still there after that."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    for step in range(200):  # 10 s
        if not qemu_pid or not program(qemu_pid).startswith("qemu-system"):
            return
        if step == 100:
            os.kill(qemu_pid, signal.SIGKILL)
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def program(pid: int) -> str:
    """The basename of a process's argv[0]; "" once it is gone (or a zombie)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return ""
    return os.path.basename(argv0.decode(errors="replace"))


def memfd_kib(pid: int) -> int:
    """KiB allocated in the memfds a process holds open, each counted once."""
    seen: dict[int, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if os.readlink(path).startswith("/memfd:"):
                st = os.stat(path)
                seen[st.st_ino] = st.st_blocks // 2
        except OSError:
            continue
    return sum(seen.values())


def memfd_mapped_kib(pid: int) -> int:
    """KiB of a process's memfd mappings that are in its page tables (their Rss)."""
    total, in_memfd = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=5)
            if "-" in head[0] and len(head) >= 5:  # a mapping's header: range perms ...
                in_memfd = len(head) == 6 and head[5].startswith("/memfd:")
            elif in_memfd and head[0] == "Rss:":
                total += int(head[1])
    return total


def rss_pss_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB from /proc/<pid>/smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("Rss:", "Pss:"):
                fields[parts[0]] = int(parts[1])
    return fields["Rss:"], fields["Pss:"]


# --- the templated start, phase by phase ---------------------------------------------------


Span = tuple[str, float, float]


class Timed:
    """`inner` with the named coroutine methods timed into `spans` (a proxy: every other
    attribute is `inner`'s); `then` maps a method to what wraps its result in turn."""

    def __init__(self, inner: Any, spans: list[Span], names: dict[str, str],
                 then: dict[str, Callable[[Any], Any]] | None = None) -> None:
        self._inner, self._spans, self._names, self._then = inner, spans, names, then or {}

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if attr not in self._names:
            return value

        async def timed_call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            try:
                result = await value(*args, **kwargs)
            finally:
                self._spans.append((self._names[attr], t0, time.monotonic()))
            wrap = self._then.get(attr)
            return wrap(result) if wrap else result
        return timed_call


def timed_effects(spans: list[Span]) -> Any:
    """The real effects, with the VMM steps and agent calls of a clone's start timed.
    By name, so that this follows the effects' signatures wherever they go."""
    agent = {"check": "agent health check answered",
             "reseed_random": "reseed the guest's CRNG",
             "set_guest_time": "set the guest's clock",
             "create_sandbox": "CreateSandbox (mounts virtio-fs)"}
    steps = {"clone_ram": "RAM: memfd made, copy from the template",
             "launch": "QEMU + virtiofsd started",
             "restore": "restore (QMP migrate-incoming, until running)",
             "plug_devices": "plug virtio-fs (QMP device_add)",
             "vcpu_threads": "vCPU threads (QMP)",
             "connect_agent": "agent socket connected"}
    return Timed(RealEffects(), spans, steps, {
        "clone_ram": lambda ram: Timed(ram, spans, {"finish": "RAM: wait for the copy"}),
        "connect_agent": lambda client: Timed(client, spans, agent)})


Steps = dict[str, tuple[float, float]]  # a start's step: (begin, end) from its beginning


async def clone_phases(cfg: Config, rootfs: str) -> tuple[dict[str, float], Steps]:
    """One templated sandbox through the Python API (as `Sandbox.from_parts` with the
    QEMU binary's devices, for the template's hotplug headroom, and timed effects):
    (phases, the start's steps as offsets from its beginning), in seconds."""
    spec = parse_spec(default_spec(["true"]), "bench")
    devices = qemu_devices(cfg.hypervisor.path, cfg.image.dir)
    plan = plan_sandbox(request_from_parts(cfg, read_host_facts(), devices=devices))
    if plan.vm.boot != "clone":
        raise RuntimeError(f"the templated sandbox boots {plan.vm.boot}: {plan.vm.boot_reason}")
    spans: list[Span] = []
    sandbox = Sandbox(plan, effects=timed_effects(spans))
    lap = Laps()
    start = lap.mark
    try:
        await sandbox.start()
        if sandbox.plan.boot != "clone":
            raise RuntimeError(f"the clone fell back to a cold boot: {sandbox.plan.boot_reason}")
        lap("host: start sandbox (clone: steps below)")
        await run_true(sandbox, spec, rootfs, lap)
    finally:
        await sandbox.stop()
    lap("host: stop sandbox (QEMU quit, virtiofsd exit, unmount)")
    steps: Steps = {}
    for name, t0, t1 in sorted(spans, key=lambda span: span[1]):
        steps.setdefault(name, (t0 - start, t1 - start))  # a later call is not the start's
    return lap.out, steps


def print_clone_breakdown(runs: list[tuple[dict[str, float], Steps]]) -> None:
    print_breakdown([r[0] for r in runs], "templated breakdown")
    print("  start sandbox, step by step (median begin and end, ms from its beginning;"
          " some overlap):")
    names = dict.fromkeys(name for r in runs for name in r[1])
    rows = []
    for name in names:
        begin = statistics.median(r[1][name][0] for r in runs if name in r[1])
        end = statistics.median(r[1][name][1] for r in runs if name in r[1])
        rows.append((begin, end, name))
    for begin, end, name in sorted(rows):
        print(f"    {begin * 1000:6.0f} -> {end * 1000:6.0f}  ({(end - begin) * 1000:5.0f} ms)"
              f"  {name}")


if __name__ == "__main__":
    main()
