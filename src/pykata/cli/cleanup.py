"""`pykata cleanup [--dry-run]`: remove what dead sandboxes left on the host.

A sandbox whose owner (the shim or `pykata run` process) is provably gone: its VM's
processes, mounts, cgroups, network redirects and state directory; and the sockets of
shims that died. Live sandboxes are never touched.
"""

from __future__ import annotations

import argparse

from pykata.host.config_files import load_config
from pykata.sandbox.leftovers import sweep


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    done = sweep(cfg.runtime.state_dir, dry_run=args.dry_run)
    prefix = "would: " if args.dry_run else ""
    for line in done:
        print(f"{prefix}{line}")
    if not done:
        print("nothing to clean up")
    return 0
