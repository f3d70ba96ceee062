"""`pykata run`: resolve what to run (bundle, rootfs or the demo rootfs), then run it."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from pykata.domain.config import Config
from pykata.domain.errors import SpecError
from pykata.domain.spec import Spec, default_spec, parse_spec
from pykata.host.config_files import load_config
from pykata.sandbox.leftovers import sweep
from pykata.sandbox.request import (
    annotated,
    build_request,
    parse_annotation_args,
    plan_sandbox,
)
from pykata.sandbox.run import run_container


def resolve(args: argparse.Namespace, cfg: Config) -> tuple[Spec, str]:
    """The spec to run and the host rootfs directory it names."""
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else list(args.cmd)
    if args.bundle:
        path = os.path.join(args.bundle, "config.json")
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError) as exc:
            raise SpecError(path, "(file)", str(exc)) from exc
        if cmd:
            doc.setdefault("process", {})["args"] = cmd
        spec = parse_spec(doc, path)
        return spec, os.path.join(args.bundle, spec.root_path)
    if args.rootfs:
        rootfs, readonly = args.rootfs, False
    else:
        rootfs, readonly = os.path.join(cfg.image.dir, "rootfs", "busybox"), True
    if not os.path.isdir(rootfs):
        hint = "" if args.rootfs else " (run `pykata image build` first)"
        raise SpecError("--rootfs", rootfs, f"not a directory{hint}")
    return parse_spec(default_spec(cmd or ["sh"], readonly=readonly), "default spec"), rootfs


def main(args: argparse.Namespace) -> int:
    def warn(msg: str) -> None:
        print(f"pykata: warning: {msg}", file=sys.stderr)

    cfg = load_config(args.config)
    spec, rootfs = resolve(args, cfg)
    if not os.path.isdir(rootfs):
        raise SpecError("config.json", "root.path", f"{rootfs} is not a directory")
    extra = parse_annotation_args(args.annotation)
    if extra:
        spec = parse_spec(annotated(spec.doc, extra), "config.json")
    # One container for the VM's whole life: sized at boot, no hotplug headroom. Allowed
    # annotations apply; a refused one fails the run before anything starts.
    plan = plan_sandbox(build_request(spec.doc, cfg=cfg, resizable=False))
    if args.dry_run:
        print(json.dumps(plan.to_json(), indent=2))
        return 0
    for warning in plan.warnings:
        warn(warning)
    for line in sweep(cfg.runtime.state_dir):  # what earlier, killed runs left
        logging.getLogger(__name__).info("cleanup: %s", line)
    return asyncio.run(run_container(plan, spec, os.path.abspath(rootfs), args.interactive,
                                     warn))

