"""What `pykata plan` prints is what runs: for a bundle naming a network namespace, the plan
lists the NICs, and its QEMU argv equals, option for option, the argv of the QEMU that
`pykata run` launches for the same bundle (read from /proc/<pid>/cmdline), but for the fd
numbers and the random sandbox id."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_support import Pykata, leftovers
from netns_support import PodNet

from pykata.domain.spec import default_spec

pytestmark = pytest.mark.e2e


def _normalized(argv: list[str], sandbox_id: str) -> list[str]:
    return [re.sub(r"fd[=/]\d+", "fd=N", arg.replace(sandbox_id, "ID")) for arg in argv]


def _id(argv: list[str]) -> str:
    return argv[argv.index("-name") + 1].removeprefix("pykata-")


def _qemu_cmdline(state_dir: Path, timeout: float = 60) -> tuple[str, list[str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                raw = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            argv = raw.decode().split("\0")[:-1]
            if argv and argv[0].endswith("qemu-system-x86_64") and str(state_dir) in raw.decode() \
                    and _id(argv) != "template":  # the VM template, made on first use
                return _id(argv), argv
        time.sleep(0.1)
    raise AssertionError("no QEMU started")


def test_plan_argv_is_the_launched_argv(pykata: Pykata, pod_net: PodNet, tmp_path: Path) -> None:
    spec = default_spec(["sleep", "1000"], root_path=str(pykata.image_dir / "rootfs/busybox"))
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"]
                                   if n["type"] != "network"]
    spec["linux"]["namespaces"].append({"type": "network", "path": pod_net.pod_path})
    (tmp_path / "config.json").write_text(json.dumps(spec))
    r = pykata.run("plan", "--run", "--json", "--bundle", str(tmp_path))
    assert r.returncode == 0, r.stderr.decode()
    plan = json.loads(r.stdout)
    assert [n["link"] for n in plan["network"]["nics"]] == ["eth0"]
    assert plan["network"]["nics"][0]["mac"] == pod_net.mac
    dry = pykata.run("run", "--dry-run", "--bundle", str(tmp_path))
    assert dry.returncode == 0, dry.stderr.decode()
    dry_argv = json.loads(dry.stdout)["qemu_argv"]
    assert _normalized(dry_argv, _id(dry_argv)) == _normalized(plan["qemu_argv"], "plan")

    env = {**os.environ, "PYKATA_CONF_FILE": str(pykata.config)}
    proc = subprocess.Popen([sys.executable, "-m", "pykata.cli.main", "run", "--bundle",
                             str(tmp_path)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        sandbox_id, launched = _qemu_cmdline(pykata.state_dir)
    finally:
        proc.send_signal(2)
        proc.send_signal(2)
        proc.communicate(timeout=60)
    assert _normalized(launched, sandbox_id) == _normalized(plan["qemu_argv"], "plan")
    assert leftovers(pykata.state_dir) == []
