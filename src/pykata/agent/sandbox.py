"""Sandbox-wide operations: CreateSandbox (hostname, shared storages) and DestroySandbox.

Validates everything before the first effect, undoes its own mounts when a later one
fails, and leaves container work to `Containers`. Knows nothing of protobuf.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pykata.agent.console import log
from pykata.agent.containers import Containers
from pykata.agent.registry import check_id
from pykata.agent.storage import Storage, System, plan_mount
from pykata.domain.errors import BadValue, DuplicateId

_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})\Z")


class Sandbox:
    def __init__(self, containers: Containers, system: System) -> None:
        self._containers, self._system = containers, system
        self.sandbox_id: str | None = None
        self.mounts: list[str] = []

    def create(self, sandbox_id: str, hostname: str, storages: Sequence[Storage]) -> None:
        if sandbox_id:
            check_id("sandbox_id", sandbox_id)
        if self.sandbox_id is not None:
            raise DuplicateId("sandbox", self.sandbox_id)
        if hostname and not _HOSTNAME.match(hostname):
            raise BadValue("hostname", hostname, "must be 1-64 of [A-Za-z0-9.-]")
        plans = [plan_mount(s) for s in storages]
        if hostname:
            self._system.set_hostname(hostname)
        try:
            for plan in plans:
                self._system.mount(plan)
                self.mounts.append(plan.target)
        except BaseException:
            self._unmount_all()
            raise
        self.sandbox_id = sandbox_id
        log(f"sandbox {sandbox_id!r} created, storages at {self.mounts}")

    async def destroy(self) -> None:
        """Kills and removes every container, then unmounts; failures go to the console."""
        for failure in await self._containers.remove_all():
            log(f"destroy sandbox: {failure}")
        self._unmount_all()
        self.sandbox_id = None

    def _unmount_all(self) -> None:
        while self.mounts:
            target = self.mounts.pop()
            try:
                self._system.unmount(target)
            except OSError as exc:
                log(f"destroy sandbox: {exc}")
