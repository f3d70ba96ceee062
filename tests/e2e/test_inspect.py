"""`pykata inspect` on a running sandbox: vCPU threads (affinity, host node, guest node),
memory backends (binding, resident pages per host node), the list of running sandboxes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Pykata

from pykata.domain.cpuset import CpuSet
from pykata.domain.limits import Limits
from pykata.host.config_files import load_config
from pykata.host.facts import read_host_facts
from pykata.host.qemu_caps import qemu_devices
from pykata.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.e2e


async def _inspect_while_running(pykata: Pykata, config: Path, sandbox: Sandbox
                                 ) -> tuple[str, dict[str, Any], str]:
    await sandbox.start()
    try:
        listing, doc = await asyncio.to_thread(
            lambda: (pykata.run("inspect", config=config),
                     pykata.run("inspect", sandbox.id, "--json", config=config)))
        assert doc.returncode == 0, doc.stderr.decode()
        text = await asyncio.to_thread(pykata.run, "inspect", sandbox.id, config=config)
        return listing.stdout.decode(), json.loads(doc.stdout), text.stdout.decode()
    finally:
        await sandbox.stop()


def test_inspect_shows_placement(pykata: Pykata, tmp_path: Path) -> None:
    config = tmp_path / "inspect.toml"
    config.write_text(pykata.config.read_text().replace(
        "[runtime]\n", "[runtime]\nenable_vcpus_pinning = true\n")
        + '[hypervisor.qemu]\ndefault_vcpus = 2\ndefault_memory = 512\nenable_numa = true\n'
        'numa_mapping = ["0", "0"]\n')
    cfg = load_config(str(config))
    sandbox = Sandbox.from_parts(cfg, read_host_facts(), devices=qemu_devices(cfg.hypervisor.path,
                                                                    cfg.image.dir),
                      workload=Limits(cpuset=CpuSet.parse("0-1")))
    listing, doc, text = asyncio.run(_inspect_while_running(pykata, config, sandbox))
    assert listing.split()[0] == sandbox.id
    assert [(v["vcpu"], v["guest_node"], v["host_cpus"], v["host_nodes"])
            for v in doc["vcpus"]] == [(0, 0, "0", "0"), (1, 1, "1", "0")]
    assert doc["pinning"]["pinned"] and doc["pinning"]["enabled"]
    assert {v["cgroup"] for v in doc["vcpus"]} == {f"/pykata/{sandbox.id}"}
    memory = {m["backend"]: m for m in doc["memory"]}
    assert sorted(memory) == ["numa-mem0", "numa-mem1"]
    for m in memory.values():
        assert (m["size_mib"], m["policy"], m["host_nodes"]) == (256, "bind", "0")
        assert list(m["resident_mib"]) == ["node0"] and m["resident_mib"]["node0"] > 0
    assert "vCPU pinning: on; 2 vCPUs on the 2 CPUs of the pod's cpuset 0-1" in text
    gone = pykata.run("inspect", sandbox.id, config=config)
    assert gone.returncode == 125
    assert f"sandbox {sandbox.id!r}: not running" in gone.stderr.decode()
