"""What a task's bundle and options say, and its root filesystem on the host.

The bundle's config.json (the spec), containerd's runtime options (CRI's `ConfigPath`),
and the rootfs mounts containerd prepared (an overlay snapshot), mounted at the spec's root
under the bundle and unmounted on Delete or a failed Create.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from pykata.domain.errors import INVALID_ARGUMENT, PykataError, RpcError
from pykata.domain.limits import Limits
from pykata.domain.spec import Spec, parse_spec
from pykata.protocol.pb import shim_pb2 as pb
from pykata.sandbox import rootfs as rootfs_mounts
from pykata.sandbox.request import limits_from_spec
from pykata.sandbox.sandbox import Sandbox
from pykata.shim.args import PodRole
from pykata.shim.tasks import Task

log = logging.getLogger(__name__)

RUNTIME_OPTIONS_URL = "runtimeoptions.v1.Options"
@dataclass(frozen=True)
class BootRequest:
    """What the first task tells about the sandbox to boot."""
    task_id: str
    spec: Spec
    role: PodRole
    config_path: str


Boot = Callable[[BootRequest], Coroutine[Any, Any, Sandbox]]


def config_path_from(options: pb.RuntimeOptions | None, fallback: str) -> str:
    return options.config_path if options is not None and options.config_path else fallback


def runtime_options(any_type_url: str, value: bytes) -> pb.RuntimeOptions | None:
    if not any_type_url.endswith(RUNTIME_OPTIONS_URL):
        return None
    return pb.RuntimeOptions.FromString(value)


def read_spec(bundle: str) -> Spec:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path) as f:
            return parse_spec(json.load(f), path)
    except (OSError, ValueError) as exc:
        raise RpcError("Create", INVALID_ARGUMENT, f"{path}: {exc}") from None



def task_limits(spec: Spec, role: PodRole) -> Limits:
    """What a task adds to its VM's size. A pod's sandbox container adds nothing: the pod's
    annotations sized the VM at boot, and its pause process has no limits to speak of."""
    if role.is_pod and role.is_sandbox:
        return Limits()
    try:
        return limits_from_spec(spec.doc, "config.json")
    except PykataError as exc:
        raise RpcError("Create", INVALID_ARGUMENT, str(exc)) from None


def resource_limits(resources: Mapping[str, Any]) -> Limits:
    """The limits an Update's OCI LinuxResources set."""
    try:
        return limits_from_spec({"linux": {"resources": resources}}, "Update resources")
    except PykataError as exc:
        raise RpcError("Update", INVALID_ARGUMENT, str(exc)) from None


def mount_rootfs(task: Task, r: pb.CreateTaskRequest, spec: Spec) -> str:
    """Mounts `r.rootfs` at the spec's root (relative to the bundle); returns that path."""
    rootfs = os.path.join(r.bundle, spec.root_path)
    try:
        for m in r.rootfs:
            os.makedirs(rootfs, exist_ok=True)
            rootfs_mounts.mount(m.type, m.source, rootfs, m.options)
            task.rootfs_mounts.append(rootfs)
    except PykataError:
        unmount_rootfs(task)
        raise
    return rootfs


def unmount_rootfs(task: Task) -> None:
    for target in reversed(task.rootfs_mounts):
        try:
            rootfs_mounts.unmount(target)
        except PykataError as exc:
            log.error("task %s: %s", task.id, exc)
    task.rootfs_mounts.clear()
