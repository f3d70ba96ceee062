"""The `pykata` command: argument parsing and dispatch. Heavy imports happen per command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pykata.domain.errors import PykataError

EXIT_PYKATA_ERROR = 125


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pykata", description="Containers in lightweight VMs.")
    p.add_argument("--config", help="configuration file (default: $PYKATA_CONF_FILE, "
                   "/etc/pykata/configuration.toml, built-in defaults)")
    p.add_argument("--debug", action="store_true", help="log what pykata does to stderr")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a container in a new VM",
                         description="Run a container in a new VM; exit with its exit code "
                         "(128+N when killed by signal N).")
    src = run.add_mutually_exclusive_group()
    src.add_argument("--bundle", help="OCI bundle directory (config.json + rootfs)")
    src.add_argument("--rootfs", help="root filesystem directory; a default spec around it")
    run.add_argument("-i", "--interactive", action="store_true",
                     help="send pykata's stdin to the container")
    run.add_argument("--config", default=argparse.SUPPRESS, help="configuration file")
    run.add_argument("--annotation", action="append", default=[], metavar="K=V",
                     help="add or override an annotation of the spec (as `pykata plan`)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan it would execute (as `pykata plan --json`), run "
                     "nothing")
    run.add_argument("cmd", nargs=argparse.REMAINDER,
                     help="command and arguments (after --); default: the bundle's, or sh")

    image = sub.add_parser("image", help="build or describe the guest image")
    isub = image.add_subparsers(dest="image_command", required=True)
    build = isub.add_parser("build", help="(re)build the guest kernel + initramfs")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.add_argument("--oci-runtime", choices=("crun", "runc"), default="crun")
    build.add_argument("--compression", choices=("none", "gzip", "zstd"), default=None)
    info = isub.add_parser("info", help="versions, sizes and sha256 of the guest image")
    info.add_argument("--json", action="store_true")

    check = sub.add_parser("check", help="can this host run pykata, and how fast?",
                           description="Check the host: CPU virtualisation, KVM, QEMU, "
                           "virtiofsd, vsock, the guest image, cgroups, NUMA. Exit 0 only "
                           "when pykata can run.")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("--verbose", action="store_true",
                       help="hints for every line, and the full host report")
    check.add_argument("--boot", action="store_true",
                       help="also boot one real VM, run `true` in it, and time it")

    _add_plan_parser(sub)

    inspect = sub.add_parser(
        "inspect", help="where a running sandbox's vCPUs, memory and devices are",
        description="For a running sandbox: each vCPU's host thread, allowed CPUs, host node "
        "and cgroup; each memory backend's binding and where its pages are; each device's "
        "guest node; whether vCPU pinning is on and why. Without SANDBOX: list the running "
        "sandboxes.")
    inspect.add_argument("sandbox", nargs="?", help="sandbox id (as in the state directory)")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")

    cleanup = sub.add_parser(
        "cleanup", help="remove what dead sandboxes left behind",
        description="Remove what sandboxes whose owner (shim or `pykata run`) died left on "
        "the host: QEMU and virtiofsd, mounts, cgroups, network redirects, state "
        "directories, dead shims' sockets. Live sandboxes are never touched.")
    cleanup.add_argument("--dry-run", action="store_true", help="say what would be removed")

    fac = sub.add_parser(
        "factory", help="the VM template sandboxes are cloned from",
        description="Make (init), describe (status) or remove (destroy) the template VM that "
        "sandboxes start from when [factory] enable_template is on.")
    fsub = fac.add_subparsers(dest="factory_command", required=True)
    for verb, what in (("init", "make the template (remade if stale)"),
                       ("status", "whether there is a template, and whether it is current"),
                       ("destroy", "remove the template (running clones are unaffected)")):
        fsub.add_parser(verb, help=what).add_argument("--json", action="store_true",
                                                      help="machine-readable output")

    mon = sub.add_parser(
        "monitor", help="serve Prometheus metrics of every running sandbox",
        description="Serve /metrics (Prometheus text format) for the sandboxes running under "
        "the state directory: QEMU's, virtiofsd's and the shim's CPU, memory, threads and "
        "fds, and each VM's sizes, boot path, NUMA nodes and pinning (docs/metrics.md).")
    mon.add_argument("--listen", default="127.0.0.1:8090", metavar="ADDR:PORT",
                     help="where to serve (default: loopback only, 127.0.0.1:8090)")
    mon.add_argument("--deadline", type=float, default=2.0, metavar="SECONDS",
                     help="how long a scrape waits for the sandboxes (default 2)")

    env = sub.add_parser("env", help="effective configuration and host facts, for bug reports")
    env.add_argument("--json", action="store_true", help="JSON instead of TOML")
    _add_install_parser(sub)
    return p


def _add_plan_parser(sub: Any) -> None:
    p = sub.add_parser("plan", help="show the VM pykata would boot, and why",
                       description="Compute, without starting anything, the VM the runtime "
                       "would boot for a bundle or a Kubernetes Pod manifest.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", help="OCI bundle directory (config.json)")
    src.add_argument("--pod", help="Kubernetes Pod manifest (YAML)")
    p.add_argument("--config", default=argparse.SUPPRESS, help="configuration file")
    p.add_argument("--annotation", action="append", default=[], metavar="K=V",
                   help="add or override an annotation of the bundle's config.json")
    p.add_argument("--sysfs-root", help="read the host's CPUs, RAM and NUMA "
                   "topology from this directory laid out like /sys")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--run", action="store_true",
                   help="the VM `pykata run` boots: one container for its whole life, so "
                   "static (no hotplug headroom); default: the runtime's resizable sandbox")


def _add_install_parser(sub: Any) -> None:
    p = sub.add_parser("install", help="register pykata with a container manager")
    isub = p.add_subparsers(dest="install_command", required=True)
    c = isub.add_parser("containerd", help="pykata as a runtime of containerd 1.6's CRI plugin",
                        description="Print the containerd config entry that registers pykata "
                        "(runtime `pykata`, type io.containerd.pykata.v2) and the Kubernetes "
                        "RuntimeClass; with --write, install it.")
    c.add_argument("--write", action="store_true",
                   help="write the drop-in (atomically) and add its import to containerd's "
                   "config; running it again changes nothing")
    c.add_argument("--config-path", metavar="FILE",
                   help="the pykata configuration the shim reads (ConfigPath); default: "
                   "the file pykata reads, else /etc/pykata/configuration.toml")
    c.add_argument("--containerd-config", metavar="FILE",
                   help="containerd's main config (default: /etc/containerd/config.toml)")
    c.add_argument("--drop-in", metavar="FILE",
                   help="where the drop-in goes (default: conf.d/pykata.toml beside the "
                   "containerd config); its directory's *.toml get imported")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="pykata: %(levelname)s: %(name)s: %(message)s")
    try:
        # One module per verb, imported only when used (`pykata run` skips the others).
        verb = importlib.import_module(f"pykata.cli.{args.command}")
        return int(verb.main(args))
    except PykataError as exc:
        print(f"pykata: error: {exc}", file=sys.stderr)
        return EXIT_PYKATA_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
