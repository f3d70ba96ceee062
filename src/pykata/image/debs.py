"""Debian packages for the guest: candidate versions, download, unpack, soname owners.

Talks to apt through its command-line clients (`apt-cache`, `apt-get download`) and unpacks
with `dpkg-deb -x`; never installs anything on the host. Parsing of apt's output is kept in
pure functions. Which file of a package goes into the image is decided elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from pykata.domain.errors import ImageError

KERNEL_META = "linux-image-cloud-amd64"
PYTHON_PACKAGES = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib")
PROTOBUF_PACKAGE = "python3-protobuf"
BUSYBOX_PACKAGE = "busybox-static"

# Which Debian (bookworm, amd64) package ships each shared library the guest may need.
# A fixed table keeps the cache key honest (every package here is in the inputs hash);
# a soname missing from it is a clear build error, not a guess.
SONAME_PACKAGES: Mapping[str, str] = {
    "ld-linux-x86-64.so.2": "libc6", "libc.so.6": "libc6", "libm.so.6": "libc6",
    "libpthread.so.0": "libc6", "libdl.so.2": "libc6", "librt.so.1": "libc6",
    "libresolv.so.2": "libc6", "libutil.so.1": "libc6",
    "libz.so.1": "zlib1g", "libexpat.so.1": "libexpat1", "libffi.so.8": "libffi8",
    "liblzma.so.5": "liblzma5", "libbz2.so.1.0": "libbz2-1.0", "libuuid.so.1": "libuuid1",
    "libsystemd.so.0": "libsystemd0",
    "libseccomp.so.2": "libseccomp2", "libcap.so.2": "libcap2", "libyajl.so.2": "libyajl2",
    "libzstd.so.1": "libzstd1", "libgcrypt.so.20": "libgcrypt20",
    "libgpg-error.so.0": "libgpg-error0", "liblz4.so.1": "liblz4-1",
    "libgcc_s.so.1": "libgcc-s1", "libstdc++.so.6": "libstdc++6",
    "libprotobuf.so.32": "libprotobuf32",
}


def lib_packages() -> tuple[str, ...]:
    return tuple(sorted(set(SONAME_PACKAGES.values())))


def package_for_soname(soname: str, needed_by: str) -> str:
    pkg = SONAME_PACKAGES.get(soname)
    if pkg is None:
        raise ImageError(f"{needed_by} needs {soname}, which no known Debian package "
                         "provides: add it to pykata.image.debs.SONAME_PACKAGES")
    return pkg


def parse_policy(text: str) -> dict[str, str | None]:
    """`apt-cache policy A B` output -> {name: candidate version or None}."""
    out: dict[str, str | None] = {}
    name: str | None = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            name = line[:-1].removesuffix(":amd64")
        elif name is not None and line.strip().startswith("Candidate:"):
            cand = line.split(":", 1)[1].strip()
            out[name] = None if cand == "(none)" else cand
    return out


def parse_kernel_depends(show_text: str, meta_version: str) -> tuple[str, str]:
    """From `apt-cache show <meta>` records, the (package, version) the candidate pins.

    linux-image-cloud-amd64 depends on exactly one linux-image-<abi>-cloud-amd64 (= ver).
    """
    for record in show_text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", record, re.MULTILINE))
        if fields.get("Version") != meta_version:
            continue
        m = re.search(r"(linux-image-[^\s,(]+)\s*\(=\s*([^)\s]+)\)", fields.get("Depends", ""))
        if m:
            return m.group(1), m.group(2)
        raise ImageError(f"{KERNEL_META} {meta_version}: no pinned linux-image-* in Depends")
    raise ImageError(f"{KERNEL_META}: no apt-cache record for version {meta_version}")


def deb_glob(name: str, version: str) -> str:
    """The file `apt-get download` writes, any architecture (an epoch's ':' is "%3a")."""
    return f"{name}_{version.replace(':', '%3a')}_*.deb"


def run_tool(argv: Sequence[str], what: str, cwd: Path | None = None) -> str:
    """Run a tool in its own process group; its stdout, or ImageError with stderr's tail.

    dpkg-deb and apt-get fork helpers that keep writing after their parent dies: when the
    build is interrupted, the whole group is killed and reaped before the caller cleans up.
    """
    try:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    except FileNotFoundError as exc:
        raise ImageError(f"{what} failed: {argv[0]} is not installed") from exc
    try:
        out, err = proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):  # the group may be gone already
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise ImageError(f"{what} failed (exit {proc.returncode}): {err.strip()[-600:]}")
    return out


class Apt:
    """The apt/dpkg commands the builder runs; `cache_dir` keeps apt's binary cache file."""

    def __init__(self, cache_dir: Path) -> None:
        # Some hosts (Docker images) switch apt's binary cache off, which makes every
        # apt-cache call re-parse all lists (~1 s); keep one of our own so a warm check is fast.
        self._opts = ["-o", f"Dir::Cache::pkgcache={cache_dir / 'pkgcache.bin'}"]
        self._cache_dir = cache_dir

    def _run(self, argv: Sequence[str], what: str, cwd: Path | None = None) -> str:
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        return run_tool(argv, what, cwd)

    def candidates(self, names: Sequence[str]) -> dict[str, str]:
        text = self._run(["apt-cache", *self._opts, "policy", *names], "apt-cache policy")
        found = parse_policy(text)
        out: dict[str, str] = {}
        for name in names:
            ver = found.get(name)
            if ver is None:
                raise ImageError(f"apt-cache policy {name}: no candidate version "
                                 "(run apt-get update, or check the package name)")
            out[name] = ver
        return out

    def kernel_package(self, meta_version: str) -> tuple[str, str]:
        text = self._run(["apt-cache", *self._opts, "show", KERNEL_META],
                         f"apt-cache show {KERNEL_META}")
        return parse_kernel_depends(text, meta_version)

    @staticmethod
    def cached_deb(debs_dir: Path, name: str, version: str) -> Path | None:
        return next(iter(sorted(debs_dir.glob(deb_glob(name, version)))), None)

    def download(self, packages: Mapping[str, str], debs_dir: Path) -> dict[str, Path]:
        """Fetch missing .debs of exactly these versions into `debs_dir` (one apt call)."""
        debs_dir.mkdir(parents=True, exist_ok=True)
        missing = sorted(n for n, v in packages.items() if not self.cached_deb(debs_dir, n, v))
        if missing:
            # Download beside, then rename: an interrupted fetch leaves no half .deb behind.
            with tempfile.TemporaryDirectory(dir=debs_dir, prefix=".download-") as tmp:
                argv = ["apt-get", *self._opts, "-o", "APT::Sandbox::User=root", "-q",
                        "download", *(f"{n}={packages[n]}" for n in missing)]
                self._run(argv, f"apt-get download {' '.join(missing)}", cwd=Path(tmp))
                for deb in Path(tmp).glob("*.deb"):
                    deb.rename(debs_dir / deb.name)
        paths: dict[str, Path] = {}
        for name, version in packages.items():
            path = self.cached_deb(debs_dir, name, version)
            if path is None:
                raise ImageError(f"apt-get download {name}={version}: no .deb written "
                                 f"in {debs_dir}")
            paths[name] = path
        return paths

    def unpack(self, deb: Path, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        self._run(["dpkg-deb", "-x", str(deb), str(dest)], f"dpkg-deb -x {deb.name}")
        return dest
