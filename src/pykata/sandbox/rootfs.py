"""A task's root filesystem on the host, for the shim: the mounts containerd prepared (an
overlay snapshot) put at the spec's root under the bundle, and taken away again."""

from __future__ import annotations

from collections.abc import Sequence

from pykata.host import mounts
from pykata.sandbox.leftovers import mounts_below


def mount(fstype: str, source: str, target: str, options: Sequence[str]) -> None:
    mounts.mount(fstype, source, target, list(options))


def unmount(target: str) -> None:
    mounts.unmount(target)


def unmount_below(path: str) -> None:
    """Everything mounted at or below `path`, deepest first (a dead shim's bundle)."""
    for point in mounts_below(path):
        mounts.unmount(point)
