"""End-to-end fixtures: a private state dir per test session and a CLI runner.

Needs root, QEMU, virtiofsd and a built guest image; skips with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import netns_support
import pytest
from e2e_support import IMAGE_DIR, TEMPLATE, Pykata, leftovers, missing_reason, remove_template


@pytest.fixture(scope="session")
def pykata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pykata]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    state_dir = Path(f"/run/pykata-test-{os.getpid()}")
    conf_dir = tmp_path_factory.mktemp("conf")
    env = Pykata(conf_dir / "configuration.toml", state_dir, IMAGE_DIR)
    env.write_config()
    yield env
    remove_template(state_dir)
    left = leftovers(state_dir) + [f"file {p}" for p in state_dir.glob(TEMPLATE)]
    shutil.rmtree(state_dir, ignore_errors=True)
    assert not left, f"sandboxes left things behind: {left}"


@pytest.fixture
def busybox_rootfs(pykata: Pykata, tmp_path: Path) -> Path:
    """A private, writable copy of the demo rootfs."""
    dest = tmp_path / "rootfs"
    shutil.copytree(pykata.image_dir / "rootfs" / "busybox", dest, symlinks=True)
    return dest


@pytest.fixture
def pod_net() -> Iterator[netns_support.PodNet]:
    """A pod network namespace with a veth to a peer namespace, removed afterwards."""
    reason = netns_support.missing_reason()
    if reason:
        pytest.skip(reason)
    pod = netns_support.make_pod_net()
    yield pod
    pod.remove()
