"""`pykata inspect [SANDBOX] [--json]`: where a running sandbox's vCPU threads, memory and
devices are on the host, and why (pykata.sandbox.inspect gathers it). Without SANDBOX, the
running sandboxes under the configured state_dir."""

from __future__ import annotations

import argparse
import asyncio
import json

from pykata.host.config_files import load_config
from pykata.host.topology import read_topology
from pykata.sandbox.inspect import inspect_sandbox, render, running_sandboxes


def main(args: argparse.Namespace) -> int:
    root = load_config(args.config).runtime.state_dir
    if args.sandbox is None:
        found = running_sandboxes(root)
        if args.json:
            print(json.dumps([{"id": s, "qemu_pid": pid} for s, pid in found], indent=2))
        else:
            print("\n".join(f"{s}  QEMU pid {pid}" for s, pid in found)
                  or f"no running sandbox under {root}")
        return 0
    view = asyncio.run(inspect_sandbox(root, args.sandbox, read_topology("/sys")))
    print(json.dumps(view.to_json(), indent=2) if args.json else render(view))
    return 0
