"""Deterministic OCI image archives written with Python alone (no registry, no docker), for
`ctr images import` in end-to-end tests: static busybox (optionally with extra files) and a
tiny pod sandbox ("pause") image."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
IMAGE_REF = "docker.io/library/busybox:latest"
PAUSE_REF = "registry.k8s.io/pause:pykata-test"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FIXED_MTIME = 946684800  # 2000-01-01: fixed so the layer, config and archive digests are stable

MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"


def build_busybox_image(out_tar: Path, *, ref: str = IMAGE_REF,
                        extra_files: Mapping[str, tuple[bytes, int]] | None = None) -> str:
    """Write an OCI image archive of static busybox to out_tar; return the name it imports as.

    Import it with `Containerd.import_image`, which passes the `--base-name` that makes
    `ctr images import` keep exactly that name. `extra_files` (path in the image -> data,
    mode) are added to the layer, e.g. small static test helpers in `bin/`.
    """
    busybox = _static_busybox()
    layer = _layer_tar(busybox, _applets(), extra_files or {})
    return _write_image(out_tar, ref, layer, {"Env": [f"PATH={IMAGE_PATH}"], "Cmd": ["sh"]})


def build_pause_image(out_tar: Path, ref: str = PAUSE_REF) -> str:
    """Write a pod sandbox ("pause") image archive to out_tar; return the name it imports as.

    Its entrypoint `/pause` is a static C program (`PAUSE_C`) when gcc can link one
    statically here; otherwise busybox with a shell loop that behaves the same way.
    """
    pause = compile_static(PAUSE_C)
    if pause is not None:
        layer = _tar_bytes({"pause": (pause, 0o755)}, {"dev": 0o755, "proc": 0o555,
                                                        "sys": 0o555}, [])
        return _write_image(out_tar, ref, layer, {"Entrypoint": ["/pause"]})
    layer = _layer_tar(_static_busybox(), ["sh", "sleep"], {})
    return _write_image(out_tar, ref, layer, {
        "Env": [f"PATH={IMAGE_PATH}"],
        "Entrypoint": ["/bin/sh", "-c",
                       "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]})


# The pod sandbox's init: pause until SIGTERM or SIGINT (then exit 0), reaping children.
PAUSE_C = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = stop;
    sigaction(SIGINT, &sa, 0);
    sigaction(SIGTERM, &sa, 0);
    sa.sa_handler = reap;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &sa, 0);
    for (;;) pause();
}
"""


def compile_static(c_source: str) -> bytes | None:
    """A static x86_64 executable built from c_source with gcc, or None where gcc or the
    static libc (libc.a) is missing."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    with tempfile.TemporaryDirectory(prefix="static-c-") as tmp:
        src, out = Path(tmp) / "prog.c", Path(tmp) / "prog"
        src.write_text(c_source)
        proc = subprocess.run([gcc, "-static", "-Os", "-s", "-o", str(out), str(src)],
                              capture_output=True, timeout=120)
        if proc.returncode != 0:
            return None
        return out.read_bytes()


def _write_image(out_tar: Path, ref: str, layer: bytes, image_config: Mapping[str, object],
                 ) -> str:
    config = _json_bytes({
        "architecture": "amd64",
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
    })
    manifest = _json_bytes({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": _descriptor(MT_CONFIG, config),
        "layers": [_descriptor(MT_LAYER, layer)],
    })
    index = _json_bytes({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            **_descriptor(MT_MANIFEST, manifest),
            "annotations": {"org.opencontainers.image.ref.name": ref},
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    })
    files = {"oci-layout": _json_bytes({"imageLayoutVersion": "1.0.0"}), "index.json": index}
    for blob in (layer, config, manifest):
        files[f"blobs/sha256/{_digest(blob).removeprefix('sha256:')}"] = blob
    out_tar.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_tar.with_name(out_tar.name + ".tmp")
    tmp.write_bytes(_tar_bytes({name: (data, 0o644) for name, data in files.items()}, {}, []))
    tmp.replace(out_tar)
    return ref


def _static_busybox() -> bytes:
    if not BUSYBOX.exists():
        subprocess.run(["apt-get", "install", "-y", "-q", "busybox-static"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                       stdout=subprocess.DEVNULL, timeout=600)
    data = BUSYBOX.read_bytes()
    if _has_interpreter(data):
        raise RuntimeError(f"{BUSYBOX} is dynamically linked: install busybox-static")
    return data


def _has_interpreter(elf: bytes) -> bool:
    """True when an ELF64 little-endian binary has PT_INTERP, i.e. is not static."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise RuntimeError(f"{BUSYBOX} is not an ELF64 binary")
    (phoff,) = struct.unpack_from("<Q", elf, 32)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3
               for i in range(phnum))


def _applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return sorted({a for a in out.split() if a and "/" not in a and a != "busybox"})


def _layer_tar(busybox: bytes, applets: list[str],
               extra_files: Mapping[str, tuple[bytes, int]]) -> bytes:
    dirs = {"bin": 0o755, "etc": 0o755, "tmp": 0o1777, "root": 0o700,
            "proc": 0o555, "sys": 0o555, "dev": 0o755}
    files = {
        "bin/busybox": (busybox, 0o755),
        "etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        "etc/group": (b"root:x:0:\n", 0o644),
        **extra_files,
    }
    links = [(f"bin/{applet}", "busybox") for applet in applets if f"bin/{applet}" not in files]
    return _tar_bytes(files, dirs, links)


def _tar_bytes(files: Mapping[str, tuple[bytes, int]], dirs: Mapping[str, int],
               links: Sequence[tuple[str, str]]) -> bytes:
    """A tar whose bytes depend only on its arguments: sorted, root-owned, fixed mtimes."""
    def info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime, ti.uname, ti.gname = kind, mode, FIXED_MTIME, "root", "root"
        return ti

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(dirs):
            tar.addfile(info(name, tarfile.DIRTYPE, dirs[name]))
        entries = sorted([*((n, None) for n in files), *links])
        for name, target in entries:
            if target is None:
                data, mode = files[name]
                ti = info(name, tarfile.REGTYPE, mode)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
            else:
                ti = info(name, tarfile.SYMTYPE, 0o777)
                ti.linkname = target
                tar.addfile(ti)
    return buf.getvalue()


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": _digest(data), "size": len(data)}


# --- the daemon --------------------------------------------------------------------------
