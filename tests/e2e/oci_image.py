"""A deterministic OCI image archive of static busybox, written with Python alone (no
registry, no docker), for `ctr images import` in end-to-end tests."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
IMAGE_REF = "docker.io/library/busybox:latest"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FIXED_MTIME = 946684800  # 2000-01-01: fixed so the layer, config and archive digests are stable

MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"


def build_busybox_image(out_tar: Path) -> str:
    """Write an OCI image archive of static busybox to out_tar; return the name it imports as.

    Import it with `Containerd.import_image`, which passes the `--base-name` that makes
    `ctr images import` keep exactly that name.
    """
    busybox = _static_busybox()
    layer = _layer_tar(busybox, _applets())
    config = _json_bytes({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [f"PATH={IMAGE_PATH}"], "Cmd": ["sh"]},
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
            "annotations": {"org.opencontainers.image.ref.name": IMAGE_REF},
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
    return IMAGE_REF


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


def _layer_tar(busybox: bytes, applets: list[str]) -> bytes:
    dirs = {"bin": 0o755, "etc": 0o755, "tmp": 0o1777, "root": 0o700,
            "proc": 0o555, "sys": 0o555, "dev": 0o755}
    files = {
        "bin/busybox": (busybox, 0o755),
        "etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        "etc/group": (b"root:x:0:\n", 0o644),
    }
    links = [(f"bin/{applet}", "busybox") for applet in applets]
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
