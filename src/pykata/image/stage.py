"""Fill a staging directory with the guest's files, package by package.

Each `stage_*` function copies what one part of the image needs out of an unpacked
package into the staging root, laid out as the contracts file's "Guest image layout"
says. Shared libraries are added afterwards (sharedlibs.py), compilation to .pyc by the
builder. Nothing here downloads, archives or compresses.
"""

from __future__ import annotations

import json
import lzma
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pykata.domain.errors import ImageError
from pykata.image import elf, kmod
from pykata.image.files import (
    copy_file,
    copy_from_tree,
    resolve_in_tree,
    write_bytes,
    write_text,
)
from pykata.image.pycompile import keep_stdlib_path

STDLIB = "usr/lib/python3.11"
DIST_PACKAGES = "usr/lib/python3/dist-packages"
AGENT_DIR = "usr/lib/pykata"
AGENT_PARTS = ("__init__.py", "agent", "protocol", "transport", "domain")
_AGENT_SKIP_SUFFIXES = (".pyi", ".proto", ".pyc", ".typed")

INIT_STUB = """#!/usr/bin/python3.11 -SsE
import os, sys
sys.path[:0] = ["/usr/lib/pykata", "/usr/lib/python3/dist-packages"]
os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "cpp"
from pykata.agent.main import main
main()
"""
FLOOR_SCRIPT = "#!/bin/busybox sh\n/bin/busybox poweroff -f\n"
IMAGE_DIRS = ("proc", "sys", "dev", "run", "tmp", "mnt", "etc", "root")
ROOTFS_DIRS = ("tmp", "proc", "sys", "dev", "root", "etc")
PASSWD_ROOT = "root:x:0:0:root:/root:/bin/sh\n"
GROUP_ROOT = "root:x:0:\n"
PASSWD_NOBODY = "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP_NOGROUP = "nogroup:x:65534:\n"


@dataclass(frozen=True)
class KernelParts:
    version: str  # e.g. "6.1.0-56-cloud-amd64"
    vmlinuz: Path  # inside the unpacked package
    modules: tuple[str, ...]  # guest paths, load order
    on_demand: int = 0  # modules only modprobe loads (xz-compressed)


def stage_kernel(pkg: Path, root: Path, requested: Sequence[str],
                 on_demand: Sequence[str] = ()) -> KernelParts:
    """Copy the requested modules (and their deps) flat into /lib/modules/<version>/, the
    on-demand ones (and theirs) xz-compressed beside them, with modprobe's index files."""
    versions = sorted(p.name for p in (pkg / "lib/modules").iterdir() if p.is_dir())
    if len(versions) != 1:
        raise ImageError(f"{pkg.name}: expected one /lib/modules/<version>, found {versions}")
    version = versions[0]
    vmlinuz = pkg / "boot" / f"vmlinuz-{version}"
    if not vmlinuz.is_file():
        raise ImageError(f"{pkg.name}: /boot/vmlinuz-{version} is missing")
    guest: list[str] = []
    modules_dir = pkg / "lib/modules" / version / "kernel"
    target = root / "lib/modules" / version
    files: dict[str, str] = {}
    infos: dict[str, dict[str, list[str]]] = {}
    for name, ko in kmod.resolve_modules(modules_dir, requested, pkg.name):
        copy_file(ko, target / f"{name}.ko", 0o644)
        guest.append(f"/lib/modules/{version}/{name}.ko")
        files[name] = f"{name}.ko"
        infos[name] = elf.modinfo(ko.read_bytes(), ko.name)
    for name, ko in kmod.resolve_modules(modules_dir, on_demand, pkg.name):
        if name in files:
            continue
        data = ko.read_bytes()
        infos[name] = elf.modinfo(data, ko.name)
        files[name] = f"{name}.ko.xz"
        # CRC32: the check busybox's xz decoder always has.
        write_bytes(target / files[name], lzma.compress(data, check=lzma.CHECK_CRC32), 0o644)
    dep, alias = kmod.depmod_files(
        files, {n: elf.split_depends(i) for n, i in infos.items()},
        {n: i.get("alias", []) for n, i in infos.items()})
    write_text(target / "modules.dep", dep)
    write_text(target / "modules.alias", alias)
    return KernelParts(version, vmlinuz, tuple(guest), len(files) - len(guest))


def busybox_applets(busybox: Path) -> list[str]:
    """Applet paths ("bin/sh", "usr/bin/env") from the binary's own --list-full."""
    try:
        out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ImageError(f"{busybox} --list-full failed: {exc}") from exc
    return sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()})


def stage_busybox(pkg: Path, root: Path) -> None:
    """/bin/busybox and one symlink per applet.

    Links are relative ("../../bin/busybox") so they also resolve when the tree is looked
    at from the host, where an absolute link would point at the host's own busybox.
    """
    copy_from_tree(pkg, "bin/busybox", root / "bin/busybox")
    for applet in busybox_applets(root / "bin/busybox"):
        if applet == "bin/busybox":
            continue
        link = root / applet
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink() and not link.exists():
            link.symlink_to(os.path.relpath("bin/busybox", PurePosixPath(applet).parent))


def copy_python_tree(pkg: Path, sub: str, root: Path) -> int:
    """Copy `pkg/sub` (a stdlib dir) into `root/sub`, pruned; returns files copied."""
    base = pkg / sub
    count = 0
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = PurePosixPath(Path(dirpath).relative_to(base).as_posix())
        dirnames[:] = [d for d in dirnames if keep_stdlib_path(rel_dir / d / "x")]
        for name in filenames:
            rel = rel_dir / name
            if not keep_stdlib_path(rel):
                continue
            real = resolve_in_tree(pkg, f"{sub}/{rel}")
            if real is None or not real.is_file():
                continue  # dangling, e.g. sitecustomize.py -> /etc/python3.11/...
            copy_file(real, root / sub / rel)
            count += 1
    return count


def stage_python(pkgs: Sequence[Path], root: Path) -> int:
    """/usr/bin/python3.11 and the pruned stdlib from the three Debian python packages."""
    count = 0
    for pkg in pkgs:
        if (pkg / "usr/bin/python3.11").exists():
            copy_from_tree(pkg, "usr/bin/python3.11", root / "usr/bin/python3.11")
        if (pkg / STDLIB).is_dir():
            count += copy_python_tree(pkg, STDLIB, root)
    if not (root / "usr/bin/python3.11").is_file():
        raise ImageError("python3.11-minimal: /usr/bin/python3.11 is missing")
    (root / "usr/bin/python3").symlink_to("python3.11")
    return count


def stage_protobuf(pkg: Path, root: Path) -> int:
    """google/protobuf with its C++ extension, which the guest selects: under TCG the
    pure-Python backend costs ~0.5 s more at import (it builds every message class in
    Python). The extension's libprotobuf/libstdc++ come in as shared libraries."""
    src = pkg / DIST_PACKAGES / "google/protobuf"
    files = sorted(p for p in src.rglob("*.py") if p.is_file())
    extensions = sorted(src.glob("pyext/_message.cpython-311-*.so"))
    if not files or not extensions:
        raise ImageError(f"{pkg.name}: no {DIST_PACKAGES}/google/protobuf/*.py "
                         "or pyext/_message*.so")
    for f in files:
        copy_file(f, root / DIST_PACKAGES / f.relative_to(pkg / DIST_PACKAGES), 0o644)
    for f in extensions:
        copy_file(f, root / DIST_PACKAGES / f.relative_to(pkg / DIST_PACKAGES), 0o755)
    return len(files) + len(extensions)


def agent_files(package_dir: Path) -> list[Path]:
    """The pykata files the guest needs, relative to the package directory."""
    out: list[Path] = []
    for part in AGENT_PARTS:
        p = package_dir / part
        if p.is_file():
            out.append(Path(part))
            continue
        if not p.is_dir():
            raise ImageError(f"pykata package {package_dir}: {part} is missing")
        out += [f.relative_to(package_dir) for f in p.rglob("*")
                if f.is_file() and "__pycache__" not in f.parts
                and not f.name.endswith(_AGENT_SKIP_SUFFIXES)]
    return sorted(out)


def stage_agent(package_dir: Path, root: Path) -> int:
    files = agent_files(package_dir)
    for rel in files:
        copy_file(package_dir / rel, root / AGENT_DIR / "pykata" / rel, 0o644)
    return len(files)


def stage_oci_runtime(pkg: Path, name: str, root: Path) -> str:
    """The runtime binary at /usr/bin/<name>, whatever path its package uses."""
    for rel in (f"usr/bin/{name}", f"usr/sbin/{name}"):
        if resolve_in_tree(pkg, rel) is not None:
            copy_from_tree(pkg, rel, root / "usr/bin" / name)
            return f"/usr/bin/{name}"
    raise ImageError(f"{pkg.name}: no /usr/bin/{name} or /usr/sbin/{name} in the package")


def stage_config(root: Path, oci_runtime: str, modules: Sequence[str]) -> None:
    """/init, /pykata-floor, /etc/pykata/agent.json, users and the empty mount points."""
    for d in IMAGE_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    write_text(root / "init", INIT_STUB, 0o755)
    write_text(root / "pykata-floor", FLOOR_SCRIPT, 0o755)
    config = {"oci_runtime": oci_runtime, "modules": list(modules)}
    write_text(root / "etc/pykata/agent.json", json.dumps(config, indent=2) + "\n")
    write_text(root / "etc/passwd", PASSWD_ROOT)
    write_text(root / "etc/group", GROUP_ROOT)


def stage_busybox_rootfs(busybox_pkg: Path, dest: Path) -> None:
    """The demo container rootfs `pykata run` uses by default."""
    stage_busybox(busybox_pkg, dest)
    for d in ROOTFS_DIRS:
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    os.chmod(dest / "root", 0o700)
    write_text(dest / "etc/passwd", PASSWD_ROOT + PASSWD_NOBODY)
    write_text(dest / "etc/group", GROUP_ROOT + GROUP_NOGROUP)
