"""`pykata install containerd [--write]`: register pykata as a runtime of containerd 1.6's
CRI plugin.

Prints the drop-in (the runtime entry, and the Kubernetes RuntimeClass as comments); with
--write, installs it and makes containerd's main config import it. Running it again
changes nothing unless the inputs changed. pykata.plan.containerd_config decides,
pykata.host.containerd_files reads and writes; it never restarts containerd.
"""

from __future__ import annotations

import argparse
import os
import sys

from pykata.host import config_files
from pykata.host.containerd_files import BACKUP_SUFFIX, apply_install, glob_files, read_text
from pykata.plan.containerd_config import (
    CONTAINERD_CONFIG,
    default_dropin,
    load_order,
    plan_dropin,
    plan_main_config,
    render_snippet,
)


def shim_config_path(explicit: str | None) -> tuple[str, list[str]]:
    """The ConfigPath the shim gets: the main file pykata itself reads, except the packaged
    default, which moves with the installation (then the system file); and warnings."""
    path, reason = config_files.config_path(explicit)
    if reason == "packaged default":
        path = config_files.SYSTEM_CONFIG
    full = os.path.abspath(path)  # the shim runs in the bundle's directory
    if os.path.isfile(full):
        return full, []
    return full, [f"{full} does not exist yet: the shim will not start until it does "
                  f"(the packaged default is {config_files.PACKAGED_CONFIG})"]


def main(args: argparse.Namespace) -> int:
    config_path, warnings = shim_config_path(args.config_path or args.config)
    for warning in warnings:
        print(f"pykata: warning: {warning}", file=sys.stderr)
    main_config = os.path.abspath(args.containerd_config or CONTAINERD_CONFIG)
    dropin = os.path.abspath(args.drop_in or default_dropin(main_config))
    if args.write:
        _write(config_path, main_config, dropin)
    else:
        print(render_snippet(config_path, main_config, dropin), end="")
    return 0


def _write(config_path: str, main_config: str, dropin: str) -> None:
    before = read_text(main_config)
    main_plan = plan_main_config(main_config, before, dropin)
    globs = {i: glob_files(i) for i in main_plan.imports if "*" in i and os.path.isabs(i)}
    order = load_order(main_config, main_plan.imports, dropin, globs)
    loaded = [(p, (main_plan.text or before) if p == main_config else read_text(p))
              for p in order]
    plan = plan_dropin(config_path, main_config, dropin, loaded)
    wrote_dropin, wrote_main = apply_install(dropin, plan.text, main_config, before,
                                             main_plan.text)
    print(f"wrote {dropin}" if wrote_dropin else f"{dropin}: unchanged",
          f"(runtime pykata, ConfigPath {config_path})")
    if plan.carried_from:
        print(f'  with the [plugins."io.containerd.grpc.v1.cri"] settings of '
              f"{plan.carried_from}: run this again after changing them")
    if not wrote_main:
        print(f"{main_config}: unchanged (it imports {dropin})")
    elif before is None:
        print(f"created {main_config}: version = 2, imports = [{main_plan.added!r}]")
    else:
        print(f"added {main_plan.added!r} to the imports of {main_config} "
              f"(the old file is {main_config}{BACKUP_SUFFIX})")
    if wrote_dropin or wrote_main:
        print("restart containerd to load it: systemctl restart containerd")
    print(f"Kubernetes: apply the RuntimeClass (handler pykata) at the end of {dropin}")
