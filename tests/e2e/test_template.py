"""VM templating end to end (`[factory] enable_template`), real QEMU under TCG.

The first start makes the template (a booted, paused, saved VM under `template_path`);
later starts are clones: QEMU with `-incoming defer` on a memfd copy of the template's RAM,
fresh entropy and the host's clock, virtio-fs and NICs hot-plugged, then grown by hotplug
to the pod's size. Checked here: the clone's argv and plan, random bytes and the clock,
virtio-fs (rootfs and a volume), pod networking, CPU and memory hotplug and vCPU pinning
after the restore, `ctr run` and a CRI pod from the template, a template made stale by a
new initrd, a corrupt or half-written template, and a template destroyed under a running
clone. Nothing may be left: no process naming the state or template dirs, no mount, no
socket, no memfd in this process.

The templates live in `/run/pykata-test-<pid>-template/`: `main/` for the session's
configuration, `alt/` for one whose kernel and initrd are copies the tests may touch (so
its remakes never cost the others theirs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import containerd_support
import cri_support
import pytest
from containerd_support import IMAGE_REF
from cri_support import CriHarness
from e2e_support import Pykata, leftovers, qemu_argvs
from netns_support import PodNet
from test_net import assert_clean, fetch_from_pod, peer_server, run_pod, stop
from test_shim import (
    SETTLE_TIMEOUT,
    ShimEnv,
    removed_after,
    shim_environment,
)

from pykata.domain.cpuset import CpuSet
from pykata.domain.limits import Limits
from pykata.domain.spec import default_spec
from pykata.host.affinity import thread_affinity
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.host.qemu_caps import qemu_devices
from pykata.plan.template import MEMORY, NEW, READY, STATE
from pykata.sandbox import factory
from pykata.sandbox.agent_client import AgentClient
from pykata.sandbox.request import template_manifest
from pykata.sandbox.sandbox import PLAN_FILE, Sandbox

pytestmark = pytest.mark.e2e

MiB = 1 << 20
C = CpuSet.parse
MEMFD_PREFIX = "/memfd:pykata"  # the RAM copies: memfd_create("pykata-<id>")


# --- configurations and templates ------------------------------------------------------


def factory_toml(template_dir: Path) -> str:
    return f'[factory]\nenable_template = true\ntemplate_path = "{template_dir}"\n'


def templating_config(pykata: Pykata, path: Path, template_dir: Path, runtime: str = "",
                      extra: str = "") -> Path:
    """The session's configuration with templating on (and `runtime` lines, `extra`)."""
    base = pykata.config.read_text().replace("[runtime]\n", f"[runtime]\n{runtime}")
    path.write_text(base + factory_toml(template_dir) + extra)
    return path


@dataclass
class Templating:
    """A configuration with templating on, the template it uses, and a bundle to plan."""

    pykata: Pykata
    config: Path
    dir: Path
    bundle: Path

    @property
    def state_dir(self) -> Path:
        return self.pykata.state_dir

    def as_pykata(self) -> Pykata:
        """The session's runner, with this configuration."""
        return replace(self.pykata, config=self.config)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return self.pykata.run(*args, timeout=timeout, config=self.config)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYKATA_CONF_FILE": str(self.config)}
        return subprocess.Popen([sys.executable, "-m", "pykata.cli.main", *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)

    def plan(self, *extra: str) -> dict[str, Any]:
        r = self.run("plan", "--json", "--bundle", str(self.bundle), *extra)
        assert r.returncode == 0, r.stderr.decode()
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    def manifest(self) -> dict[str, Any]:
        doc = template_manifest(str(self.dir))
        assert doc is not None, f"no template at {self.dir}: {listing(self.dir)}"
        return doc

    @property
    def reused(self) -> str:
        return f"from the template at {self.dir}"

    @property
    def made_first(self) -> str:
        return f"no template at {self.dir} yet: made first"

    def ensure_made(self) -> None:
        """A template ready for this configuration (made by a throwaway run if needed)."""
        if self.plan()["boot_reason"] != self.reused:
            r = self.run("run", "--", "true")
            assert r.returncode == 0, r.stderr.decode()
        assert self.plan()["boot_reason"] == self.reused


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def own_memfds() -> list[str]:
    """Guest RAM memfds this (pytest) process still holds: each is a leak."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(MEMFD_PREFIX):
                found.append(f"memfd fd {fd} of pytest: {target}")
    return found


def template_leftovers(base: Path) -> list[str]:
    """Processes naming the template dirs, mounts under them, sockets in them, RAM memfds
    held by this process."""
    found = containerd_support.leftovers(base)
    if base.exists():
        found += [f"socket {p}" for p in base.rglob("*") if p.is_socket()]
    return found + own_memfds()


def make_bundle(path: Path, args: list[str], root: Path, readonly: bool = True,
                binds: dict[str, Path] | None = None) -> Path:
    spec = default_spec(args, root_path=str(root), readonly=readonly)
    spec.setdefault("mounts", []).extend(
        {"destination": dest, "type": "bind", "source": str(src), "options": ["rbind", "rw"]}
        for dest, src in (binds or {}).items())
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="module")
def templates(pykata: Pykata) -> Iterator[Path]:
    """The dir of this module's templates: destroyed afterwards, and nothing may be left."""
    base = Path(f"{pykata.state_dir}-template")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o700)
    yield base
    for template in sorted(base.iterdir()):
        asyncio.run(factory.destroy(str(template)))
    left = template_leftovers(base) + [f"file {p}" for p in listing(base)]
    shutil.rmtree(base, ignore_errors=True)
    assert not left, f"the template tests left things behind: {left}"
    assert leftovers(pykata.state_dir) == []


@pytest.fixture(scope="module")
def tpl(pykata: Pykata, templates: Path, tmp_path_factory: pytest.TempPathFactory
        ) -> Templating:
    """The session's configuration with templating on; its template in `main/`."""
    conf = tmp_path_factory.mktemp("tpl-conf")
    bundle = make_bundle(conf / "bundle", ["true"], pykata.image_dir / "rootfs" / "busybox")
    return Templating(pykata, templating_config(pykata, conf / "template.toml",
                                                templates / "main"), templates / "main", bundle)


@dataclass
class AltTemplating(Templating):
    image: Path  # the kernel and initrd this configuration names: copies, free to touch


@pytest.fixture(scope="module")
def alt(pykata: Pykata, templates: Path, tmp_path_factory: pytest.TempPathFactory
        ) -> AltTemplating:
    """Templating with a kernel and initrd of its own (as after `pykata image build`); its
    template in `alt/`."""
    conf = tmp_path_factory.mktemp("alt-conf")
    image = conf / "image"
    image.mkdir()
    for name in ("vmlinuz", "initramfs.img"):
        shutil.copy(pykata.image_dir / "image" / name, image / name)
    extra = (f'[hypervisor.qemu]\nkernel = "{image / "vmlinuz"}"\n'
             f'initrd = "{image / "initramfs.img"}"\n')
    config = templating_config(pykata, conf / "alt.toml", templates / "alt", extra=extra)
    bundle = make_bundle(conf / "bundle", ["true"], pykata.image_dir / "rootfs" / "busybox")
    return AltTemplating(pykata, config, templates / "alt", bundle, image)


# --- finding a clone's QEMU ------------------------------------------------------------


def wait_qemu(state_dir: Path, timeout: float = 60) -> tuple[int, list[str]]:
    deadline = time.monotonic() + timeout
    while not (found := qemu_argvs(state_dir)):
        assert time.monotonic() < deadline, f"no QEMU under {state_dir} in {timeout:g} s"
        time.sleep(0.05)
    [(pid, argv)] = found.items()
    return pid, argv


def sandbox_id(argv: list[str]) -> str:
    return argv[argv.index("-name") + 1].removeprefix("pykata-")


def recorded_plan(state_dir: Path, sid: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((state_dir / sid / PLAN_FILE).read_text())
    return doc


def check_clone_argv(pid: int, argv: list[str]) -> None:
    """A clone's QEMU: `-incoming defer`, guest RAM a shared memfd it holds, the template's
    DAX image, and neither the shared fs nor a NIC on its command line (both are
    hot-plugged)."""
    assert argv[argv.index("-incoming") + 1] == "defer", argv
    [backend] = [a for a in argv if a.startswith("memory-backend-file,id=mem0,")]
    assert any(a.startswith("virtio-pmem-pci,") for a in argv), argv
    assert "share=on" in backend.split(","), backend
    fd = re.search(r"mem-path=/proc/self/fd/(\d+)", backend)
    assert fd, backend
    assert os.readlink(f"/proc/{pid}/fd/{fd[1]}").startswith(MEMFD_PREFIX)
    assert not [a for a in argv if "vhost-user-fs" in a or a.startswith("virtio-net")], argv


def finish(proc: subprocess.Popen[bytes]) -> None:
    """End a `pykata run` still running after a failed check: Ctrl-C twice, then kill."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


# --- 1-4: a clone, as `pykata run` starts it -------------------------------------------


def test_first_run_makes_the_template_then_runs_as_a_clone(tpl: Templating) -> None:
    asyncio.run(factory.destroy(str(tpl.dir)))
    plan = tpl.plan()
    assert (plan["boot"], plan["boot_reason"]) == ("clone", tpl.made_first)
    assert "-incoming" in plan["qemu_argv"]
    r = tpl.run("run", "--", "sh", "-c", "echo made")
    assert (r.returncode, r.stdout) == (0, b"made\n"), r.stderr.decode()
    manifest = tpl.manifest()
    ready = tpl.dir / READY
    assert (ready / MEMORY).stat().st_size == manifest["memory_mib"] * MiB
    assert (ready / STATE).stat().st_size > 0
    assert not (tpl.dir / NEW).exists(), listing(tpl.dir)
    for extra in ((), ("--run",)):  # the runtime's resizable sandbox, and `pykata run`'s
        plan = tpl.plan(*extra)
        assert (plan["boot"], plan["boot_reason"]) == ("clone", tpl.reused), extra

    proc = tpl.popen("run", "--", "sh", "-c", "echo up; sleep 2; echo down")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"up\n"
        pid, argv = wait_qemu(tpl.state_dir)
        check_clone_argv(pid, argv)
        recorded = recorded_plan(tpl.state_dir, sandbox_id(argv))
        assert (recorded["boot"], recorded["boot_reason"]) == ("clone", tpl.reused)
        out, err = proc.communicate(timeout=60)
    finally:
        finish(proc)
    assert (proc.returncode, out) == (0, b"down\n"), err.decode()
    assert tpl.manifest()["created"] == manifest["created"], "the template was remade"
    assert leftovers(tpl.state_dir) == []


def test_two_clones_at_once_draw_different_random_bytes(tpl: Templating) -> None:
    """Both restore the same RAM, CRNG state included: only the reseed tells them apart."""
    tpl.ensure_made()
    script = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'"
    procs = [tpl.popen("run", "--", "sh", "-c", script) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            finish(p)
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
    first, second = (out for out, _ in outs)
    assert re.fullmatch(rb"[0-9a-f]{64}", first) and re.fullmatch(rb"[0-9a-f]{64}", second)
    assert first != second
    assert leftovers(tpl.state_dir) == []


def test_virtio_fs_and_the_clock_in_a_clone(tpl: Templating, busybox_rootfs: Path,
                                            tmp_path: Path) -> None:
    """The rootfs and a bind-mounted volume, read and written through the hot-plugged
    virtio-fs; the guest's clock is the host's, not the template's (saved a while ago)."""
    tpl.ensure_made()
    (busybox_rootfs / "from-host").write_text("rootfs file\n")
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "in").write_text("volume file\n")
    script = ("cat /from-host /vol/in && echo rootfs-write > /written && "
              "echo vol-write > /vol/out && date +%s")
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", script], busybox_rootfs,
                         readonly=False, binds={"/vol": volume})
    before = time.time()
    r = tpl.run("run", "--bundle", str(bundle))
    after = time.time()
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().splitlines()
    assert lines[:2] == ["rootfs file", "volume file"], lines
    age = before - tpl.manifest()["created"]
    assert before - 2 <= int(lines[2]) <= after + 2, (
        f"guest clock {lines[2]}, host {before:.0f}-{after:.0f}, template {age:.0f} s old")
    assert (busybox_rootfs / "written").read_text() == "rootfs-write\n"
    assert (volume / "out").read_text() == "vol-write\n"
    assert leftovers(tpl.state_dir) == []


def test_pod_network_in_a_clone(tpl: Templating, pod_net: PodNet, tmp_path: Path) -> None:
    """test_net's `pykata run` in a pod namespace, in a clone: the NIC is hot-plugged."""
    tpl.ensure_made()
    net = pod_net
    server = peer_server(net)
    script = (f"ip addr show eth0; ip route; echo ping-from-pod | nc {net.peer_ip} 7000; "
              "echo pong-run | nc -l -p 7001; echo done")
    run = run_pod(tpl.as_pykata(), tmp_path, net, script)
    try:
        pid, argv = wait_qemu(tpl.state_dir)
        check_clone_argv(pid, argv)
        assert fetch_from_pod(net) == b"pong-run\n"
        recorded = recorded_plan(tpl.state_dir, sandbox_id(argv))
        assert (recorded["boot"], recorded["boot_reason"]) == ("clone", tpl.reused)
        out, err = run.communicate(timeout=60)
    finally:
        got = stop(server)
        finish(run)
    assert run.returncode == 0, err.decode()
    text = out.decode()
    assert got == b"ping-from-pod\n"
    assert net.mac in text and f"inet {net.pod_ip}/24" in text, text
    assert f"default via {net.peer_ip} dev eth0" in text, text
    assert text.rstrip().endswith("done")
    assert_clean(net)
    assert leftovers(tpl.state_dir) == []


# --- 5: hotplug and pinning after the restore (the Sandbox API) -------------------------


def clone_sandbox(config: Path, workload: Limits) -> Sandbox:
    cfg = load_config(str(config))
    devices = qemu_devices(cfg.hypervisor.path, cfg.image.dir)
    return Sandbox.from_parts(cfg, read_host_facts(), devices=devices, workload=workload)


async def guest(sandbox: Sandbox) -> tuple[int, int]:
    details = await sandbox.agent.guest_details()
    return details.online_cpus, details.mem_total_bytes


def record_agent_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """ReseedRandomDev and SetGuestDateTime calls, still sent, that the agent answered.
    (A clone's urandom differs from its sibling's even without the reseed: the guest CPU
    has RDRAND. Only the call shows that the host's entropy went in.)"""
    calls: list[tuple[str, object]] = []
    reseed, set_time = AgentClient.reseed_random, AgentClient.set_guest_time

    async def reseed_random(self: AgentClient, data: bytes) -> None:
        await reseed(self, data)
        calls.append(("reseed", data))

    async def set_guest_time(self: AgentClient, seconds: float) -> None:
        await set_time(self, seconds)
        calls.append(("time", seconds))
    monkeypatch.setattr(AgentClient, "reseed_random", reseed_random)
    monkeypatch.setattr(AgentClient, "set_guest_time", set_guest_time)
    return calls


def test_a_clone_grows_to_its_boot_size_then_by_hotplug(
        tpl: Templating, monkeypatch: pytest.MonkeyPatch) -> None:
    """The template is 1 vCPU, 2048 MiB; a pod of 1 vCPU, 512 MiB boots (as a clone) at 2
    vCPUs, 2560 MiB, and a second container's 512 MiB are hot-plugged later. The clone got
    fresh entropy and the host's time before anything else."""
    tpl.ensure_made()
    calls = record_agent_calls(monkeypatch)
    manifest = tpl.manifest()
    sandbox = clone_sandbox(tpl.config, Limits(vcpus=1, memory_mib=512))
    assert sandbox.plan.boot == "clone"
    grow_to = (manifest["vcpus"] + 1, manifest["memory_mib"] + 512)
    assert sandbox.plan.grow_to == grow_to

    async def go() -> tuple[str, tuple[int, int], tuple[int, int], tuple[int, int]]:
        await sandbox.start()
        try:
            boot = sandbox.plan.boot
            booted = await guest(sandbox)
            size = await sandbox.resize([Limits(vcpus=1, memory_mib=512),
                                         Limits(memory_mib=512)])
            return boot, booted, await guest(sandbox), (size.vcpus, size.memory_mib)
        finally:
            await sandbox.stop()
    started = time.time()
    boot, booted, grown, size = asyncio.run(go())
    assert boot == "clone", sandbox.plan.boot_reason
    assert [name for name, _ in calls] == ["reseed", "time"], calls
    entropy, when = (value for _, value in calls)
    assert isinstance(entropy, bytes) and len(set(entropy)) > 8, entropy
    assert isinstance(when, float) and started <= when <= time.time(), (started, when)
    # Without the growth the guest would have 1 CPU and under 2048 MiB.
    assert booted[0] == grow_to[0] and booted[1] > manifest["memory_mib"] * MiB, booted
    assert size == (grow_to[0], grow_to[1] + 512)
    assert grown[0] == grow_to[0] and grown[1] - booted[1] >= 480 * MiB, (booted, grown)
    assert own_memfds() == []
    assert leftovers(tpl.state_dir) == []


def vcpu_affinity(sandbox: Sandbox) -> list[str]:
    """Each vCPU thread's CPUs, read from /proc, in vCPU order."""
    assert sandbox.vm is not None and sandbox.placement.threads is not None
    pid = sandbox.vm.qemu.pid
    return [str(thread_affinity(pid, tid)) for _, tid in
            sorted(sandbox.placement.threads.items())]


def test_a_clone_is_pinned_once_grown(tpl: Templating, tmp_path: Path) -> None:
    """Pinning on (a runtime option: the same template): a pod of 1 vCPU on cpuset 0-1
    boots at 2 vCPUs, the hot-plugged one included, pinned one to one; a cpuset update
    spreads them, and the old cpuset pins them again."""
    tpl.ensure_made()
    config = templating_config(tpl.pykata, tmp_path / "pin.toml", tpl.dir,
                               runtime="enable_vcpus_pinning = true\n")
    sandbox = clone_sandbox(config, Limits(vcpus=1, cpuset=C("0-1")))
    assert (sandbox.plan.boot, sandbox.plan.boot_reason) == ("clone", tpl.reused)

    async def go() -> list[tuple[str, int, list[str], bool]]:
        seen = []

        def look() -> None:
            pin = sandbox.placement.pin
            assert pin is not None
            seen.append((sandbox.plan.boot, sandbox.size.vcpus, vcpu_affinity(sandbox),
                         pin.pinned))
        await sandbox.start()
        try:
            look()
            await sandbox.resize([Limits(vcpus=1, cpuset=C("1"))])
            look()
            await sandbox.resize([Limits(vcpus=1, cpuset=C("0-1"))])
            look()
        finally:
            await sandbox.stop()
        return seen
    assert asyncio.run(go()) == [("clone", 2, ["0", "1"], True),
                                 ("clone", 2, ["1", "1"], False),
                                 ("clone", 2, ["0", "1"], True)]
    assert own_memfds() == []
    assert leftovers(tpl.state_dir) == []


# --- 6: containerd: `ctr run` and a CRI pod ---------------------------------------------


@pytest.fixture(scope="module")
def ctr_env(templates: Path) -> Iterator[ShimEnv]:
    """test_shim's private containerd, its shims configured with the `main/` template."""
    yield from shim_environment("pkt-", factory_toml(templates / "main"),
                                "the ctr template test")


def settled(env: ShimEnv) -> list[str]:
    """test_shim's after-test check: what is still there once the shims had time to end."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while (left := env.leftovers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        env.force_clean()
    return left


def test_ctr_run_starts_from_the_template(tpl: Templating, ctr_env: ShimEnv) -> None:
    tpl.ensure_made()
    created = tpl.manifest()["created"]
    env = ctr_env
    try:
        with removed_after(env, "tpl1"):
            env.run("-d", IMAGE_REF, "tpl1", "sleep", "1000")
            [qemu] = env.qemu_pids()
            argv = Path(f"/proc/{qemu}/cmdline").read_bytes().decode().split("\0")[:-1]
            check_clone_argv(qemu, argv)
            recorded = recorded_plan(env.state_dir, sandbox_id(argv))
            assert (recorded["boot"], recorded["boot_reason"]) == ("clone", tpl.reused)
            r = env.ctr("task", "exec", "--exec-id", "e1", "tpl1", "sh", "-c",
                        "echo exec-ok > /tmp/x && cat /tmp/x")
            assert r.stdout == b"exec-ok\n", r.stderr.decode()
    finally:
        left = settled(env)
    assert not left, f"left behind: {left}\n{env.ctrd.log_tail(60)}"
    assert tpl.manifest()["created"] == created, "the shim remade the template"


@pytest.fixture(scope="module")
def cri(templates: Path) -> Iterator[CriHarness]:
    """cri_support's harness (containerd with CRI in a netns of its own, a CNI bridge), its
    pykata shims configured with the `main/` template."""
    reason = cri_support.missing_reason() or cri_support.pykata_missing_reason()
    if reason:
        pytest.skip(reason)
    harness = CriHarness()
    conf = Path(harness.shim_env["PYKATA_CONF_FILE"])
    conf.write_text(conf.read_text() + factory_toml(templates / "main"))
    harness.start()
    yield harness
    left = harness.stop()
    assert not left, f"the CRI template test left things behind: {left}"


def test_cri_pod_starts_from_the_template(tpl: Templating, cri: CriHarness) -> None:
    """A pod (its sandbox container, then a member) from the template; the pod's CNI veth
    reaches the clone as a hot-plugged NIC."""
    tpl.ensure_made()
    created = tpl.manifest()["created"]
    with cri.pod("tpl-pod", handler="pykata") as pod:
        cid = cri.start_container(pod, "member", ["sleep", "100000"])
        recorded = recorded_plan(cri.state_dir, pod.id)
        assert (recorded["boot"], recorded["boot_reason"]) == ("clone", tpl.reused)
        [qemu] = [pid for pid in containerd_support.leftover_pids(cri.state_dir)
                  if "qemu-system" in Path(f"/proc/{pid}/cmdline").read_text()]
        argv = Path(f"/proc/{qemu}/cmdline").read_bytes().decode().split("\0")[:-1]
        check_clone_argv(qemu, argv)
        r = cri.exec(cid, "sh", "-c", "ip -o -4 addr show eth0; echo hi > /tmp/m; cat /tmp/m")
        assert r.exit_code == 0, r.stderr.decode()
        text = r.stdout.decode()
        assert " inet 10.88." in text and text.endswith("hi\n"), text
    left = cri.wait_clean()
    assert left == [], left
    assert tpl.manifest()["created"] == created, "the shim remade the template"


# --- 7: stale, half-written and corrupt templates ---------------------------------------


def test_a_new_initrd_makes_the_template_stale(alt: AltTemplating) -> None:
    """`pykata image build --force` writes new files: here, the initrd's mtime moves."""
    alt.ensure_made()
    before = alt.manifest()
    initrd = alt.image / "initramfs.img"
    st = initrd.stat()
    os.utime(initrd, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    plan = alt.plan()
    assert (plan["boot"], plan["boot_reason"]) == (
        "clone", "the template is stale (initrd changed): remade first")
    r = alt.run("run", "--", "sh", "-c", "echo fresh")
    assert (r.returncode, r.stdout) == (0, b"fresh\n"), r.stderr.decode()
    after = alt.manifest()
    assert after["created"] > before["created"]
    assert after["key"]["initrd"] != before["key"]["initrd"]
    assert after["key"]["kernel"] == before["key"]["kernel"]
    assert alt.plan()["boot_reason"] == alt.reused
    assert leftovers(alt.state_dir) == []


def test_two_first_starts_make_one_template(alt: AltTemplating) -> None:
    """No template, two runs at once: one makes it under the lock, the other waits and
    clones it (pykata logs each template it makes)."""
    alt.ensure_made()
    shutil.rmtree(alt.dir / READY)
    procs = [alt.popen("--debug", "run", "--", "sh", "-c", "echo both") for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [(p.returncode, out) for p, (out, _) in zip(procs, outs, strict=True)] == \
        [(0, b"both\n")] * 2, [err.decode()[-2000:] for _, err in outs]
    made = sum(err.decode().count("template made at") for _, err in outs)
    assert made == 1, [err.decode()[-2000:] for _, err in outs]
    assert not any(b"booting cold" in err for _, err in outs)
    assert leftovers(alt.state_dir) == []


def test_a_half_written_template_is_not_used(alt: AltTemplating) -> None:
    """A `new/` a maker left: beside a whole template it is ignored; alone it is no
    template, and the next start makes one (clearing it)."""
    alt.ensure_made()
    created = alt.manifest()["created"]
    new = alt.dir / NEW
    new.mkdir()
    (new / MEMORY).write_bytes(bytes(4096))
    (new / STATE).write_bytes(b"half a state")
    r = alt.run("run", "--", "sh", "-c", "echo beside")
    assert (r.returncode, r.stdout) == (0, b"beside\n"), r.stderr.decode()
    assert alt.manifest()["created"] == created

    shutil.rmtree(alt.dir / READY)
    assert alt.plan()["boot_reason"] == alt.made_first
    r = alt.run("run", "--", "sh", "-c", "echo alone")
    assert (r.returncode, r.stdout) == (0, b"alone\n"), r.stderr.decode()
    assert alt.manifest()["created"] > created
    assert not new.exists(), listing(alt.dir)
    assert leftovers(alt.state_dir) == []


def _garbage_state(ready: Path) -> None:
    (ready / STATE).write_bytes(os.urandom(len((ready / STATE).read_bytes())))


def _truncated_state(ready: Path) -> None:
    os.truncate(ready / STATE, 100)


def _truncated_memory(ready: Path) -> None:
    os.truncate(ready / MEMORY, MiB)


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "state-garbage": _garbage_state,
    "state-truncated": _truncated_state,
    "memory-truncated": _truncated_memory,
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_corrupt_template_falls_back_cold_and_is_remade(
        alt: AltTemplating, corrupt: Callable[[Path], None]) -> None:
    alt.ensure_made()
    created = alt.manifest()["created"]
    corrupt(alt.dir / READY)
    r = alt.run("run", "--", "sh", "-c", "echo still-runs")
    assert (r.returncode, r.stdout) == (0, b"still-runs\n"), r.stderr.decode()
    assert b"booting cold" in r.stderr, r.stderr.decode()
    assert leftovers(alt.state_dir) == []
    assert not (alt.dir / READY).exists(), (
        f"the corrupt template was kept: {listing(alt.dir)}\n{r.stderr.decode()}")
    assert alt.plan()["boot_reason"] == alt.made_first
    r = alt.run("run", "--", "sh", "-c", "echo remade")
    assert (r.returncode, r.stdout) == (0, b"remade\n"), r.stderr.decode()
    assert alt.manifest()["created"] > created
    assert alt.plan()["boot_reason"] == alt.reused
    assert leftovers(alt.state_dir) == []


# --- 8: destroyed under a running clone; nothing left -----------------------------------


def test_destroy_under_a_running_clone_leaves_nothing(tpl: Templating, templates: Path,
                                                      busybox_rootfs: Path) -> None:
    """A clone has its own copy of the RAM: the template may go while it runs."""
    tpl.ensure_made()
    script = "touch /started; while [ ! -e /stop ]; do sleep 0.1; done; echo survived"
    proc = tpl.popen("run", "--rootfs", str(busybox_rootfs), "--", "sh", "-c", script)
    try:
        deadline = time.monotonic() + 60
        while not (busybox_rootfs / "started").exists():
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "the clone's container did not start"
            time.sleep(0.1)
        pid, argv = wait_qemu(tpl.state_dir)
        check_clone_argv(pid, argv)
        assert asyncio.run(factory.destroy(str(tpl.dir))) is True
        assert not tpl.dir.exists()
        (busybox_rootfs / "stop").touch()
        out, err = proc.communicate(timeout=60)
    finally:
        finish(proc)
    assert (proc.returncode, out) == (0, b"survived\n"), err.decode()
    assert asyncio.run(factory.destroy(str(tpl.dir))) is False
    assert leftovers(tpl.state_dir) == []
    assert template_leftovers(templates) == []
