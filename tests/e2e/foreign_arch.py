"""Another architecture's Debian kernel and static busybox, for booting foreign guests.

Fetches the arch's `Packages.xz` index from the Debian mirror apt already uses, finds the
kernel and busybox-static .debs, downloads them and unpacks them with `dpkg-deb -x`. It
adds no dpkg architecture and changes no apt source. Everything is cached under
`CACHE_DIR/<debian arch>/`, so a rerun reads only the cache; a failure is an
`Unavailable` whose message says what was missing, for the caller to skip with.
"""

from __future__ import annotations

import fcntl
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CACHE_DIR = Path(os.environ.get("PYKATA_TEST_ARCH_CACHE", "/var/cache/pykata-test-arches"))
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
TIMEOUT_S = 60


@dataclass(frozen=True)
class ArchPackages:
    debian_arch: str     # the Debian port: arm64, s390x, ppc64el
    kernel_meta: str     # the metapackage that depends on the current kernel image


# Keyed by `uname -m` (pykata's ArchProfile.name).
ARCH_PACKAGES = {
    "aarch64": ArchPackages("arm64", "linux-image-cloud-arm64"),
    "s390x": ArchPackages("s390x", "linux-image-s390x"),
    "ppc64le": ArchPackages("ppc64el", "linux-image-powerpc64le"),
}
BUSYBOX = "busybox-static"


class Unavailable(Exception):
    """What could not be had; the test skips with this message."""


@dataclass(frozen=True)
class GuestPieces:
    kernel: Path         # the kernel image QEMU's -kernel loads
    busybox: Path        # a static busybox for the guest arch
    modules: Path        # lib/modules/<release> of that kernel
    kernel_version: str  # the package's kernel release, e.g. 6.1.0-37-arm64


def mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The first Debian archive URI apt uses (deb822 or one-line format)."""
    files = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*"))]
    for path in files:
        if path.suffix not in (".list", ".sources"):
            continue
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri in re.findall(r"(?:^URIs:\s*|^deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return str(uri.rstrip("/"))
    return DEFAULT_MIRROR


def paragraphs(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """Debian control paragraphs (single-line fields only: enough for Packages)."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            if fields:
                yield fields
            fields = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    if fields:
        yield fields


def wanted(fields: dict[str, str]) -> bool:
    name = fields.get("Package", "")
    return name == BUSYBOX or name.startswith("linux-image-")


def kernel_package(index: dict[str, dict[str, str]], meta: str) -> str:
    """The versioned kernel image the metapackage depends on."""
    if meta not in index:
        raise Unavailable(f"{meta} is not in the index")
    for dep in index[meta].get("Depends", "").split(","):
        name = dep.split()[0] if dep.strip() else ""
        if name.startswith("linux-image-") and name in index:
            return name
    raise Unavailable(f"{meta}: no kernel image among its Depends")


def _open(url: str) -> IO[bytes]:
    try:
        return urllib.request.urlopen(url, timeout=TIMEOUT_S)  # type: ignore[no-any-return]
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"cannot fetch {url}: {exc}") from exc


def read_index(base: str, debian_arch: str) -> dict[str, dict[str, str]]:
    """The kernel and busybox paragraphs of the arch's main Packages index."""
    url = f"{base}/dists/{SUITE}/main/binary-{debian_arch}/Packages.xz"
    with _open(url) as raw, io.TextIOWrapper(lzma.LZMAFile(raw), encoding="utf-8") as text:
        try:
            return {p["Package"]: p for p in paragraphs(text) if wanted(p)}
        except (lzma.LZMAError, OSError) as exc:
            raise Unavailable(f"cannot read {url}: {exc}") from exc


def download(url: str, dest: Path) -> None:
    tmp = dest.with_suffix(".part")
    with _open(url) as src, open(tmp, "wb") as out:
        try:
            shutil.copyfileobj(src, out)
        except OSError as exc:
            raise Unavailable(f"cannot download {url}: {exc}") from exc
    tmp.rename(dest)


def unpack(deb: Path, dest: Path) -> None:
    r = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        raise Unavailable(f"dpkg-deb -x {deb.name}: {r.stderr.strip()}")


def _pieces(root: Path, kernel_version: str) -> GuestPieces:
    boot = root / "boot"
    # ppc64el ships an ELF `vmlinux-*`; the others `vmlinuz-*`.
    kernels = sorted(boot.glob(f"vmlinu[xz]-{kernel_version}"))
    if not kernels:
        raise Unavailable(f"no kernel image in {boot}")
    busybox = root / "bin" / "busybox"
    if not busybox.exists():
        raise Unavailable(f"no busybox at {busybox}")
    return GuestPieces(kernels[0], busybox, root / "lib" / "modules" / kernel_version,
                       kernel_version)


def _fetch(arch: ArchPackages, root: Path) -> str:
    base = mirror()
    index = read_index(base, arch.debian_arch)
    kernel = kernel_package(index, arch.kernel_meta)
    if BUSYBOX not in index:
        raise Unavailable(f"{BUSYBOX} is not in the {arch.debian_arch} index")
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        for name in (kernel, BUSYBOX):
            deb = Path(tmp) / f"{name}.deb"
            download(f"{base}/{index[name]['Filename']}", deb)
            unpack(deb, root)
    return kernel.removeprefix("linux-image-")


def guest_pieces(arch: str, cache: Path = CACHE_DIR) -> GuestPieces:
    """The kernel and busybox for `arch` (uname -m spelling), fetched once and cached."""
    if arch not in ARCH_PACKAGES:
        raise Unavailable(f"no Debian packages known for {arch}")
    pkgs = ARCH_PACKAGES[arch]
    base = cache / pkgs.debian_arch
    try:
        base.mkdir(parents=True, exist_ok=True)
        lock = open(base / "lock", "w")  # noqa: SIM115 (held for the whole fetch)
    except OSError as exc:
        raise Unavailable(f"cache {base}: {exc.strerror}") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs must not unpack into one tree
        return _cached(pkgs, base)


def _cached(pkgs: ArchPackages, base: Path) -> GuestPieces:
    done, root = base / "done.json", base / "root"
    if done.exists():
        return _pieces(root, json.loads(done.read_text())["kernel_version"])
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    try:
        version = _fetch(pkgs, root)
        pieces = _pieces(root, version)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    done.write_text(json.dumps({"kernel_version": version}))
    return pieces
