"""The VM is sized from the bundle's limits, and `pykata plan` shows the same plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_support import Pykata

from pykata.domain.spec import default_spec

pytestmark = pytest.mark.e2e


def test_bundle_limits_size_the_vm(pykata: Pykata, tmp_path: Path) -> None:
    spec = default_spec(["sh", "-c", "cat /sys/devices/system/cpu/online; "
                         "grep MemTotal /proc/meminfo"])
    spec["root"]["path"] = str(pykata.image_dir / "rootfs" / "busybox")
    spec["linux"]["resources"] = {"cpu": {"quota": 100000, "period": 100000},
                                  "memory": {"limit": 512 << 20}}
    (tmp_path / "config.json").write_text(json.dumps(spec))
    plan = json.loads(pykata.run("plan", "--bundle", str(tmp_path), "--json").stdout)
    assert (plan["vcpus"], plan["memory_mib"]) == (2, 2560)
    r = pykata.run("run", "--bundle", str(tmp_path))
    assert r.returncode == 0, r.stderr.decode()
    online, meminfo = r.stdout.decode().splitlines()
    assert online == "0-1"
    # default_memory 2048 + 512 MiB, less what the guest kernel keeps for itself.
    assert int(meminfo.split()[1]) > (2048 + 300) * 1024
