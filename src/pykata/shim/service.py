"""The Task service: containerd's task calls carried out on one sandbox.

The first task creates the sandbox (boots the VM); a pod's other containers join it. The
verbs come in families, one module each (`lifecycle`, `execs`, `info`) over the shared
state and steps of `core`. Errors leave as RpcErrors with containerd's codes.
"""

from __future__ import annotations

from pykata.shim.execs import ExecVerbs
from pykata.shim.info import METRICS_URL, InfoVerbs
from pykata.shim.lifecycle import LifecycleVerbs

__all__ = ["METRICS_URL", "TaskService"]


class TaskService(LifecycleVerbs, ExecVerbs, InfoVerbs):
    """containerd.task.v2.Task: every verb, by family."""
