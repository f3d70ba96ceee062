"""`pykata check [--json] [--verbose] [--boot]`: can this host run pykata, and how fast?

Reads the host (pykata.host.checks), the guest image, and the configuration, then prints
plan.checks' verdict per line. Boots nothing unless `--boot` asks for one real VM, timed.
Exit status 0 only when no check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import enum
import json
import os
import time
from pathlib import Path
from typing import Any

from pykata.domain.checks import CheckResult, ImageReport, Status
from pykata.domain.config import Config
from pykata.domain.cpuset import CpuSet
from pykata.domain.errors import ConfigError, ImageError, PykataError
from pykata.domain.host import HostFacts
from pykata.host.checks import read_host_report
from pykata.host.config_files import load_config
from pykata.plan.checks import can_run, judge_host
from pykata.plan.vm import plan_accel

BOOT_CONTAINER = "check"


def read_image_report(cfg: Config) -> ImageReport:
    """Whether the guest `pykata run` would boot exists and matches what a build would make."""
    hv = cfg.hypervisor
    missing = [p for p in (hv.kernel, hv.initrd) if p and not os.path.isfile(p)]
    if missing:
        return ImageReport("missing", f"configured {' and '.join(missing)} not found")
    if hv.kernel and hv.initrd:
        return ImageReport("current", f"configured kernel {hv.kernel}, initrd {hv.initrd}")
    from pykata.image import builder, debs  # heavy: only check and env need it
    from pykata.image.manifest import BUILDER_VERSION

    root = Path(cfg.image.dir)
    try:
        found = builder.read_manifest(root)
    except ImageError as exc:
        return ImageReport("broken", str(exc))
    if found is None:
        return ImageReport("missing", f"no guest image in {root}/image")
    about = (f"kernel {found.kernel_version}, initramfs "
             f"{found.initramfs.size / (1 << 20):.1f} MiB, built {found.build_time}")
    opts = builder.BuildOptions(dir=root, oci_runtime=found.oci_runtime,
                                compression=found.compression)
    try:
        inputs = builder.resolve_inputs(opts, debs.Apt(root / "cache/apt"))
    except ImageError as exc:
        return ImageReport("unknown", f"{about}; cannot compare with its inputs: {exc}")
    if inputs.hash != found.inputs_hash or found.builder_version != BUILDER_VERSION:
        return ImageReport("stale", f"{about}; the agent code, package versions or builder "
                           "changed since")
    if builder.cached_manifest(root, inputs.hash) is None:
        return ImageReport("broken", f"{about}; its files differ from its manifest")
    return ImageReport("current", about)


def boot_check(cfg: Config, facts: HostFacts) -> CheckResult:
    """Boot one real VM with the configured accelerator, run `true` in it, and time it."""
    accel, _ = plan_accel(cfg.hypervisor.accel, facts)
    rootfs = os.path.join(cfg.image.dir, "rootfs", "busybox")
    try:
        up, ran = asyncio.run(_boot(cfg, facts, rootfs))
    except PykataError as exc:
        return CheckResult("boot", Status.FAIL, f"{accel}: {exc}",
                           "see the message; `pykata --debug run -- true` shows more")
    return CheckResult("boot", Status.PASS, f"{accel}: VM up, agent answering after {up:.2f} s;"
                       f" `true` ran in the guest in {ran:.2f} s")


async def _boot(cfg: Config, facts: HostFacts, rootfs: str) -> tuple[float, float]:
    from pykata.domain.spec import default_spec, parse_spec
    from pykata.sandbox.sandbox import Sandbox

    spec = parse_spec(default_spec(["true"]), "check")
    start = time.monotonic()
    sandbox = Sandbox.from_parts(cfg, facts)
    try:
        await sandbox.start()
        up = time.monotonic()
        await sandbox.create_container(BOOT_CONTAINER, spec, rootfs)
        await sandbox.agent.close_stdin(BOOT_CONTAINER)
        await sandbox.agent.start_container(BOOT_CONTAINER)
        status = await sandbox.agent.wait_process(BOOT_CONTAINER)
        if status != 0:
            raise PykataError(f"`true` exited {status} in the guest")
        return up - start, time.monotonic() - up
    finally:
        await sandbox.stop()


def jsonable(value: Any) -> Any:
    """Dataclasses, enums, sets, CPU sets and tuples as JSON/TOML-friendly values."""
    if isinstance(value, CpuSet):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, frozenset | set):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def format_text(results: list[CheckResult], verbose: bool) -> str:
    width = max(len(c.name) for c in results)
    lines = []
    for c in results:
        lines.append(f"{c.status.value.upper():4}  {c.name:<{width}}  {c.detail}")
        if c.hint and (verbose or c.status is not Status.PASS):
            lines.append(f"{'':4}  {'':<{width}}  -> {c.hint}")
    return "\n".join(lines)


def template_check(cfg: Config) -> CheckResult:
    """The VM template: off, none yet, ready or stale (all of them runnable)."""
    if not cfg.factory.enable_template:
        return CheckResult("vm template", Status.PASS, "off: sandboxes boot cold",
                           "[factory] enable_template = true starts them from a template")
    from pykata.sandbox import factory

    try:
        doc = factory.status(cfg)
    except PykataError as exc:
        return CheckResult("vm template", Status.WARN, f"cannot be planned: {exc}",
                           "sandboxes boot cold until this is fixed")
    where = doc["path"]
    if doc.get("failed"):
        return CheckResult("vm template", Status.WARN, f"at {where}: {doc['failed']}",
                           "sandboxes boot cold meanwhile; `pykata factory init` tries at "
                           "once and says why")
    if doc["state"] == "none":
        return CheckResult("vm template", Status.PASS, f"none yet at {where}: made on first "
                           "use", "`pykata factory init` makes it now")
    if doc["state"] == "stale":
        return CheckResult("vm template", Status.WARN, f"stale at {where} ({doc['changed']} "
                           "changed): remade on next use", "`pykata factory init` remakes it")
    return CheckResult("vm template", Status.PASS, f"ready at {where} "
                       f"({doc['ram_file_bytes'] >> 20} MiB of RAM saved)")


def main(args: argparse.Namespace) -> int:
    try:
        cfg, broken = load_config(args.config), None
    except ConfigError as exc:  # still check the host, against the defaults
        cfg, broken = Config(), CheckResult("configuration", Status.FAIL, str(exc),
                                            "fix the value named; the rest assumes defaults")
    report = read_host_report(cfg)
    results = judge_host(report, read_image_report(cfg), cfg)
    if broken is not None:
        results = [broken if c.name == broken.name else c for c in results]
    results.append(template_check(cfg))
    if args.boot and can_run(results):
        results.append(boot_check(cfg, report.facts))
    ok = can_run(results)
    if args.json:
        doc: dict[str, Any] = {"ok": ok, "checks": jsonable(results)}
        if args.verbose:
            doc["host"] = jsonable(report)
        print(json.dumps(doc, indent=2))
    else:
        print(format_text(results, args.verbose))
        if args.verbose:
            from pykata.domain.config_docs import dump_toml

            print("\n# host report\n" + dump_toml({"host": jsonable(report)}).strip())
        print("\npykata can run on this host." if ok else "\npykata cannot run on this host: "
              "fix the FAIL lines.")
    return 0 if ok else 1
