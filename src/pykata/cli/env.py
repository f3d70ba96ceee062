"""`pykata env [--json]`: the effective configuration and the host's facts, for bug reports.

One document (TOML, or JSON with --json) like `kata-runtime env`: pykata's version, the
configuration files read and every key's effective value, the host report that
`pykata check` judges, the guest image, and the accelerator and transport `pykata run`
would choose. Boots nothing and changes nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from typing import Any

import pykata
from pykata.cli.check import jsonable, read_image_report
from pykata.domain.config import Config, to_document
from pykata.domain.config_docs import dump_toml
from pykata.domain.errors import ConfigError
from pykata.host.checks import read_host_report
from pykata.host.config_files import config_path, load_config
from pykata.plan.vm import plan_accel, plan_transport


def environment(cfg: Config, main_reason: str) -> dict[str, Any]:
    report = read_host_report(cfg)
    facts = report.facts
    try:
        accel, why = plan_accel(cfg.hypervisor.accel, facts)
        transport = plan_transport(cfg.agent.transport, facts)
    except ConfigError as exc:
        accel, why, transport = "none", str(exc), "none"
    return {
        "meta": {"pykata": pykata.__version__,
                 "python": platform.python_version(), "executable": sys.executable},
        "config": {"files": list(cfg.sources), "main_file_from": main_reason,
                   "warnings": list(cfg.warnings), **to_document(cfg)},
        "plan": {"accelerator": accel, "accelerator_reason": why, "transport": transport},
        "image": jsonable(read_image_report(cfg)),
        "host": jsonable(report),
    }


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    _, reason = config_path(args.config)
    doc = environment(cfg, reason)
    print(json.dumps(doc, indent=2) if args.json else dump_toml(doc).strip())
    return 0
