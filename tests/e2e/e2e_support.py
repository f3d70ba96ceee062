"""End-to-end support: what a test needs to run pykata and to find what it left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

IMAGE_DIR = Path(os.environ.get("PYKATA_TEST_IMAGE_DIR", "/var/lib/pykata"))
TEMPLATE = ".template"  # the VM template's directory in a state dir, by default


def qemu_argvs(state_dir: Path, template: bool = False) -> dict[int, list[str]]:
    """The QEMUs (pid: argv) naming a path below `state_dir`; a VM template's being made
    there too only with `template`."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except OSError:
            continue
        if argv and argv[0].endswith("qemu-system-x86_64") \
                and f"{state_dir}/" in " ".join(argv) \
                and (template or "pykata-template" not in argv):
            found[int(proc.name)] = argv
    return found


def sandbox_dirs(state_dir: Path) -> set[Path]:
    """The sandboxes' state dirs below `state_dir` (not the template's)."""
    return {p for p in state_dir.iterdir() if p.name != TEMPLATE}


def remove_template(state_dir: Path) -> None:
    """The default template below `state_dir`, as `pykata factory destroy` removes it."""
    import asyncio

    from pykata.sandbox import factory

    asyncio.run(factory.destroy(str(state_dir / TEMPLATE)))


def missing_reason() -> str | None:
    if os.geteuid() != 0:
        return "end-to-end tests need root (mounts, virtiofsd)"
    for tool in ("/usr/bin/qemu-system-x86_64", "/usr/lib/qemu/virtiofsd"):
        if not os.path.exists(tool):
            return f"{tool} is not installed"
    if not (IMAGE_DIR / "image" / "manifest.json").exists():
        return f"no guest image in {IMAGE_DIR} (run `pykata image build`)"
    return None


@dataclass
class Pykata:
    config: Path
    state_dir: Path
    image_dir: Path

    def run(self, *args: str, stdin: bytes | None = None, timeout: float = 120,
            config: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "PYKATA_CONF_FILE": str(config or self.config)}
        return subprocess.run(
            [sys.executable, "-m", "pykata.cli.main", *args], input=stdin,
            capture_output=True, timeout=timeout, env=env,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )

    def write_config(self) -> None:
        self.config.write_text(
            f'[runtime]\nstate_dir = "{self.state_dir}"\n[image]\ndir = "{self.image_dir}"\n')


def leftovers(state_dir: Path) -> list[str]:
    """Processes, mounts and files a finished sandbox must not leave behind."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(state_dir) in cmdline and "pytest" not in cmdline:
            found.append(f"process {proc.name}: {cmdline[:120]}")
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f if str(state_dir) in line.split()[4]]
    if state_dir.exists():  # the VM template sandboxes start from is no sandbox's
        found += [f"file {p}" for p in state_dir.iterdir() if p.name != TEMPLATE]
    return found


