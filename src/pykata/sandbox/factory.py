"""The template factory: make a template VM, copy a clone's RAM from it, report, destroy.

A template lives in `[factory] template_path` (`template_dir`; the layout is in
`pykata.plan.template`): `ready/` holds its RAM file, device state and manifest; `new/`
is where one is made, renamed to `ready/` only once whole, so a half-made template is
never used. Makers hold `template.lock` exclusively and cloners share it while they copy:
a template is never replaced under a copy, and concurrent first starts make one template.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from pykata.domain.config import Config
from pykata.domain.errors import HostError, VmmError
from pykata.host.facts import image_bytes
from pykata.host.qemu_caps import qemu_devices
from pykata.plan.sandbox import SandboxRequest, plan_template_vm
from pykata.plan.template import (
    FAILED,
    KERNEL_STUB,
    LOCK,
    MANIFEST,
    MEMORY,
    NEW,
    READY,
    STATE,
    TEMPLATE_ID,
    TemplateKey,
    TemplatePlan,
    failure_blocks,
    template_dir,
    template_key,
)
from pykata.sandbox.agent_client import AgentClient
from pykata.sandbox.request import (
    read_facts,
    template_failure,
    template_files,
    template_manifest,
    template_on_disk,
)
from pykata.transport.ttrpc_aio import TtrpcClient
from pykata.vmm import clone
from pykata.vmm import vm as vmm

log = logging.getLogger(__name__)

INCOMING = "incoming.state"  # a clone's copy of the template's device state


_COPIER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ram-copy")


async def _lock(template_dir: str, exclusive: bool) -> int:
    """The template's lock, taken; closing the returned fd releases it."""
    os.makedirs(template_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(template_dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.asynccontextmanager
async def _locked(template_dir: str, exclusive: bool) -> AsyncIterator[None]:
    fd = await _lock(template_dir, exclusive)
    try:
        yield
    finally:
        os.close(fd)


def _ready(plan: TemplatePlan, cfg: Config) -> bool:
    return template_on_disk(cfg) == plan.key


@dataclasses.dataclass
class RamCopy:
    """A clone's RAM: the memfd, and the copy into it, which `start()` runs in a thread
    while QEMU starts (its RAM is not read before the restored guest runs); the pages are
    charged to the memory cgroup of this process at that time. `finish()` waits for the
    copy and releases the template; `close()` (after QEMU has its own) closes the memfd."""

    fd: int
    src: int
    size: int
    release: Callable[[], None]
    copy: concurrent.futures.Future[int] | None = None

    def start(self) -> None:
        self.copy = _COPIER.submit(clone.copy_extents, self.src, self.fd, self.size)

    async def finish(self) -> None:
        assert self.copy is not None, "the copy was never started"
        try:
            await asyncio.wrap_future(self.copy)
        finally:
            self.release()

    def close(self) -> None:
        if self.copy is not None:
            with contextlib.suppress(Exception):
                self.copy.result()  # never close the fd under the copying thread
        self.release()
        os.close(self.fd)


async def clone_ram(plan: TemplatePlan, cfg: Config, state_dir: str) -> RamCopy:
    """A memfd being filled with the template's RAM, and the template's device state copied
    to `state_dir`; the template is made first when there is none or it is stale. The
    template stays locked (shared) until the copy is done."""
    for _ in range(2):
        lock = await _lock(plan.dir, exclusive=False)
        try:
            if _ready(plan, cfg):
                return _copy_out(plan, state_dir, lock)
        except BaseException:
            os.close(lock)
            raise
        os.close(lock)
        if blocked := failure_blocks(template_failure(plan.dir), plan.key):
            raise VmmError(f"template at {plan.dir}: {blocked}")
        await make_template(plan, cfg)
    raise VmmError(f"template at {plan.dir}: made, but its key does not match")


def _copy_out(plan: TemplatePlan, state_dir: str, lock: int) -> RamCopy:
    ready = os.path.join(plan.dir, READY)
    size = plan.vm.sizing.memory_mib << 20
    shutil.copyfile(os.path.join(ready, STATE), os.path.join(state_dir, INCOMING))
    src = os.open(os.path.join(ready, MEMORY), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(src).st_size != size:
            raise VmmError(f"template at {plan.dir}: memory file is not {size} bytes")
        fd = clone.ram_memfd(f"pykata-{plan.vm.sandbox_id}", size)
    except BaseException:
        os.close(src)
        raise
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            os.close(src)
            os.close(lock)

    return RamCopy(fd, src, size, release)


async def make_template(plan: TemplatePlan, cfg: Config) -> dict[str, Any]:
    """Boot the template VM, wait for its agent, pause it and save it. Does nothing when a
    matching one appeared while this waited for the lock. Returns its manifest."""
    async with _locked(plan.dir, exclusive=True):
        if _ready(plan, cfg):
            return template_manifest(plan.dir) or {}
        work = os.path.join(plan.dir, NEW)
        shutil.rmtree(work, ignore_errors=True)  # a maker that died half-way
        os.mkdir(work, 0o700)
        try:
            started = time.monotonic()
            written = await _boot_and_save(plan, cfg, work)
            manifest = {"key": plan.key.to_json(), "vcpus": plan.vm.sizing.vcpus,
                        "max_vcpus": plan.vm.sizing.max_vcpus,
                        "memory_mib": plan.vm.sizing.memory_mib,
                        "max_memory_mib": plan.vm.sizing.max_memory_mib,
                        "ram_bytes": written, "created": time.time(),
                        "seconds": round(time.monotonic() - started, 3)}
            with open(os.path.join(work, MANIFEST), "w") as f:
                json.dump(manifest, f, indent=2)
            shutil.rmtree(os.path.join(plan.dir, READY), ignore_errors=True)
            os.rename(work, os.path.join(plan.dir, READY))
        except BaseException as exc:
            shutil.rmtree(work, ignore_errors=True)
            if isinstance(exc, Exception):  # not a cancel: a signal is no verdict
                _record_failure(plan, exc)
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(plan.dir, FAILED))
    log.info("template made at %s in %.2f s (%d MiB of RAM)", plan.dir,
             manifest["seconds"], written >> 20)
    return manifest


def _record_failure(plan: TemplatePlan, exc: Exception) -> None:
    why = (str(exc).splitlines() or [repr(exc)])[0]
    with contextlib.suppress(OSError), open(os.path.join(plan.dir, FAILED), "w") as f:
        json.dump({"time": time.time(), "why": why, "key": plan.key.to_json()}, f)


async def _boot_and_save(plan: TemplatePlan, cfg: Config, work: str) -> int:
    """The template VM up, its agent answering, then paused and saved; its RAM file
    written from the memfd, zero pages left as holes. Returns the bytes written."""
    hv = cfg.hypervisor
    size = plan.vm.sizing.memory_mib << 20
    shared = os.path.join(work, "shared")  # virtiofsd's: no device uses it in a template
    os.mkdir(shared, 0o700)
    ram = clone.ram_memfd("pykata-template", size)
    try:
        vm = await vmm.launch(plan.vm, work, shared, hv.virtio_fs_daemon, hv.virtio_fs_cache,
                              ram_fd=ram)
        try:
            await vm.connect_qmp()
            agent = await _agent_up(vm, cfg.agent.dial_timeout)
            clone.write_kernel_stub(plan.vm.kernel, os.path.join(work, KERNEL_STUB))
            try:
                await clone.save_state(vm.qmp, os.path.join(work, STATE))
            finally:
                await agent.close()
        finally:
            await vm.shutdown()
        os.rmdir(shared)
        out = os.open(os.path.join(work, MEMORY), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(out, size)
            return clone.copy_ram(ram, out, size)
        finally:
            os.close(out)
    finally:
        os.close(ram)


async def _agent_up(vm: vmm.Vm, timeout: float) -> AgentClient:
    """The agent answers a health check. The caller keeps the connection open while it
    saves: the guest is saved with its host side connected, as a clone's will be."""
    assert vm.agent_sock is not None  # a template's transport is virtio-serial
    reader, writer = await asyncio.open_unix_connection(sock=vm.agent_sock)
    client = AgentClient(TtrpcClient(reader, writer))
    check = asyncio.ensure_future(client.check())
    died = asyncio.ensure_future(vm.qemu.wait())
    try:
        done, _ = await asyncio.wait({check, died}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        check.cancel()
        died.cancel()
    if check not in done or check.cancelled() or check.exception() is not None:
        await client.close()
        why = "QEMU exited" if died in done else f"no answer in {timeout:g} s"
        raise VmmError(f"template VM: agent did not come up: {why}\n{vm.failure_detail()}")
    return client


def template_plan(cfg: Config) -> TemplatePlan:
    """The template this configuration calls for (whether or not templating is on)."""
    files = template_files(cfg)
    req = SandboxRequest(TEMPLATE_ID, cfg, read_facts(), image_bytes=image_bytes(cfg),
                         template_devices=qemu_devices(cfg.hypervisor.path, cfg.image.dir))
    vm = plan_template_vm(cfg, req)
    key = template_key(vm, files) if files is not None else None
    if key is None:
        raise HostError(f"cannot read the QEMU binary ({cfg.hypervisor.path}), kernel "
                        f"({vm.kernel}), initrd ({vm.initrd}) or image ({vm.image or '-'})")
    return TemplatePlan(vm, key)


def status(cfg: Config) -> dict[str, Any]:
    """What `pykata factory status` and `pykata check` say: "none", "ready" or "stale"
    (and what changed), with the template's size and where its RAM file lies."""
    path = template_dir(cfg)
    doc: dict[str, Any] = {"path": path, "enabled": cfg.factory.enable_template}
    manifest = template_manifest(path)
    on_disk = TemplateKey.from_manifest(manifest)
    key = template_plan(cfg).key
    if blocked := failure_blocks(template_failure(path), key):
        doc["failed"] = blocked
    if manifest is None or on_disk is None:
        return {**doc, "state": "none"}
    changed = key.differs(on_disk)
    ready = os.path.join(path, READY)
    try:
        ram = os.stat(os.path.join(ready, MEMORY)).st_blocks * 512
        state = os.stat(os.path.join(ready, STATE)).st_size
    except OSError:
        return {**doc, "state": "none"}
    return {**doc, "state": "stale" if changed else "ready", "changed": changed,
            "vcpus": manifest.get("vcpus"), "memory_mib": manifest.get("memory_mib"),
            "ram_file_bytes": ram, "state_bytes": state, "created": manifest.get("created"),
            "make_seconds": manifest.get("seconds")}


async def discard(template_dir: str, why: str) -> None:
    """Remove a template a clone could not use, so that the next start makes a new one."""
    log.warning("template at %s discarded: %s", template_dir, why)
    async with _locked(template_dir, exclusive=True):
        shutil.rmtree(os.path.join(template_dir, READY), ignore_errors=True)


async def destroy(template_dir: str) -> bool:
    """Remove the template and its directory; returns whether there was one. Safe while
    clones run: each has its own copy of the RAM."""
    if not os.path.isdir(template_dir):
        return False
    async with _locked(template_dir, exclusive=True):
        shutil.rmtree(template_dir, ignore_errors=True)
    return True
