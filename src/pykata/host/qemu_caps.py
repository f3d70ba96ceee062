"""The QEMU binary's devices, probed once per binary and cached.

Probing (`-device help`, the same probe `pykata check` uses) costs a QEMU start-up, so
the answer is kept in `<cache_dir>/qemu-devices.json`, keyed by the binary's path, size
and mtime: a QEMU upgrade changes the key. A cache that cannot be read or written is
only slower, never wrong.
"""

from __future__ import annotations

import json
import os
import tempfile

from pykata.domain.errors import HostError
from pykata.host.checks import read_qemu_devices

CACHE_NAME = "qemu-devices.json"


def binary_key(path: str) -> str:
    st = os.stat(path)
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def _load(cache: str) -> dict[str, list[str]]:
    try:
        with open(cache) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _store(cache: str, doc: dict[str, list[str]]) -> None:
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cache), prefix=".qemu-devices.")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(tmp, cache)
    except OSError:
        pass  # read-only image dir: probe again next time


def qemu_devices(path: str, cache_dir: str) -> frozenset[str]:
    """The devices QEMU at `path` offers, or HostError naming the binary and why not."""
    try:
        key = binary_key(path)
    except OSError as exc:
        raise HostError(f"hypervisor.qemu.path = {path!r}: {exc.strerror}") from None
    cache = os.path.join(cache_dir, CACHE_NAME)
    doc = _load(cache)
    cached = doc.get(key)
    if isinstance(cached, list) and all(isinstance(d, str) for d in cached):
        return frozenset(cached)
    devices, why = read_qemu_devices(path)
    if devices is None:
        raise HostError(f"hypervisor.qemu.path = {path!r}: `-device help` failed: {why}")
    doc = {k: v for k, v in doc.items() if not k.startswith(f"{path}:")}
    doc[key] = sorted(devices)
    _store(cache, doc)
    return devices
