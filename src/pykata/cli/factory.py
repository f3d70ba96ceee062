"""`pykata factory init|status|destroy [--json]`: the VM template, as `kata-runtime factory`.

`init` makes the template the configuration calls for (remade when stale), `status` says
whether there is one and whether it is current, `destroy` removes it. Destroying is safe
while clones run: each clone has its own copy of the template's RAM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from pykata.host.config_files import load_config
from pykata.plan.template import template_dir
from pykata.sandbox import factory


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    path = template_dir(cfg)
    if args.factory_command == "init":
        plan = factory.template_plan(cfg)
        doc: dict[str, Any] = {"path": path, **asyncio.run(factory.make_template(plan, cfg))}
        text = (f"template ready at {path}: {doc.get('vcpus')} vCPUs, "
                f"{doc.get('memory_mib')} MiB, {int(doc.get('ram_bytes', 0)) >> 20} MiB of "
                f"RAM saved")
        if not cfg.factory.enable_template:
            text += "\nnote: [factory] enable_template is false: sandboxes will not use it"
    elif args.factory_command == "status":
        doc = factory.status(cfg)
        text = _status_text(doc)
    else:
        removed = asyncio.run(factory.destroy(path))
        doc = {"path": path, "removed": removed}
        text = f"template at {path} removed" if removed else f"no template at {path}"
    print(json.dumps(doc, indent=2) if args.json else text)
    return 0


def _status_text(doc: dict[str, Any]) -> str:
    lines = [f"template: {doc['state']} ({doc['path']})",
             f"enable_template: {str(doc['enabled']).lower()}"]
    if doc["state"] != "none":
        age = time.time() - float(doc.get("created") or 0)
        lines += [f"size: {doc['vcpus']} vCPUs, {doc['memory_mib']} MiB",
                  f"ram file: {doc['ram_file_bytes'] >> 20} MiB on disk, "
                  f"state {doc['state_bytes'] >> 10} KiB",
                  f"made {age:.0f} s ago in {doc['make_seconds']} s"]
    if doc.get("failed"):
        lines.append(doc["failed"])
    if doc["state"] == "stale":
        lines.append(f"stale: {doc['changed']} changed (remade on next use, or "
                     "`pykata factory init`)")
    return "\n".join(lines)
