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
from pykata.host.facts import read_host_facts
from pykata.plan.sizing import workload_limits
from pykata.sandbox.leftovers import sweep
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
    for warning in cfg.warnings:
        warn(warning)
    spec, rootfs = resolve(args, cfg)
    if spec.doc.get("annotations"):  # most runs have none: skip the import
        from pykata.domain.annotations import apply_annotations, parse_annotations

        # Per-pod overrides, refused as a whole before anything starts.
        before = len(cfg.warnings)
        cfg = apply_annotations(cfg, parse_annotations(spec.doc, "config.json"))
        for warning in cfg.warnings[before:]:
            warn(warning)
    if not os.path.isdir(rootfs):
        raise SpecError("config.json", "root.path", f"{rootfs} is not a directory")
    workload = workload_limits(spec.doc, "config.json")
    for line in sweep(cfg.runtime.state_dir):  # what earlier, killed runs left
        logging.getLogger(__name__).info("cleanup: %s", line)
    return asyncio.run(run_container(cfg, read_host_facts(), spec, os.path.abspath(rootfs),
                                     args.interactive, warn, workload=workload))
