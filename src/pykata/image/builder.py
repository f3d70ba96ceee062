"""Build the guest image (kernel + initramfs + demo rootfs) and keep it cached.

`build_image` resolves package versions (cheap), returns the cached image when its inputs
hash matches and its files are intact, and otherwise builds into `<dir>/store/.build-*`
and switches the `<dir>/image` and `<dir>/rootfs/busybox` symlinks over atomically, so an
interrupted build leaves the previous image in place. Only one build runs per `dir` (a
file lock). What goes into the tree is stage.py's business; this module orchestrates.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pykata
from pykata.domain.errors import ImageError
from pykata.image import dax, debs, elf, kmod, pycompile, stage
from pykata.image.compress import check_compression, compress_file
from pykata.image.cpio import chardev_entry, write_archive, write_tree
from pykata.image.files import copy_file, sha256_file, tree_size
from pykata.image.manifest import (
    BUILDER_VERSION,
    FileInfo,
    ImagePaths,
    Manifest,
    format_info,
    image_paths,
    inputs_hash,
    read_manifest,
)
from pykata.image.sharedlibs import add_shared_libs

__all__ = ["BuildOptions", "ImagePaths", "Manifest", "build_image", "format_info",
           "image_paths", "read_manifest"]

OCI_RUNTIMES = ("crun", "runc")
# Device nodes PID 1 needs before anything mounts devtmpfs: /dev/console for its stdio,
# /dev/urandom because Python's startup falls back to it when getrandom() would block
# (an early TCG guest's entropy pool is not ready: "failed to get random numbers").
DEV_NODES = (
    chardev_entry("dev/console", 5, 1), chardev_entry("dev/null", 1, 3, 0o666),
    chardev_entry("dev/zero", 1, 5, 0o666), chardev_entry("dev/random", 1, 8, 0o666),
    chardev_entry("dev/urandom", 1, 9, 0o666),
)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuildOptions:
    dir: Path = Path("/var/lib/pykata")
    oci_runtime: str = "crun"
    compression: str = "none"
    modules: tuple[str, ...] = kmod.DEFAULT_MODULES
    on_demand: tuple[str, ...] = kmod.ON_DEMAND_MODULES
    on_demand_dirs: tuple[str, ...] = kmod.ON_DEMAND_DIRS


@dataclass(frozen=True)
class Inputs:
    versions: dict[str, str]  # every package that may go in, incl. the kernel it pins
    primary: tuple[str, ...]  # downloaded up front (libraries come on demand)
    kernel_package: str
    agent_dir: Path
    hash: str


def _check_options(opts: BuildOptions) -> None:
    if opts.oci_runtime not in OCI_RUNTIMES:
        raise ImageError(f"oci_runtime {opts.oci_runtime!r}: expected crun or runc")
    check_compression(opts.compression)
    if not opts.modules:
        raise ImageError("modules: the guest needs at least virtio_pci and virtio_console")


def resolve_inputs(opts: BuildOptions, apt: debs.Apt) -> Inputs:
    """Candidate versions and the cache key, without downloading anything."""
    primary = [debs.BUSYBOX_PACKAGE, *debs.PYTHON_PACKAGES, debs.PROTOBUF_PACKAGE,
               opts.oci_runtime]
    versions = apt.candidates([debs.KERNEL_META, *primary, *debs.lib_packages()])
    kpkg, kver = apt.kernel_package(versions[debs.KERNEL_META])
    versions[kpkg] = kver
    agent_dir = Path(pykata.__file__).parent
    agent = {str(rel): sha256_file(agent_dir / rel) for rel in stage.agent_files(agent_dir)}
    options: dict[str, object] = {
        "oci_runtime": opts.oci_runtime, "compression": opts.compression,
        "modules": list(opts.modules), "on_demand": list(opts.on_demand),
        "on_demand_dirs": list(opts.on_demand_dirs), "pyc_magic": pycompile.host_magic().hex()}
    return Inputs(versions, (kpkg, *primary), kpkg, agent_dir,
                  inputs_hash(versions, agent, options))


def cached_manifest(dir: Path, want_hash: str) -> Manifest | None:
    """The current manifest if it was built from `want_hash` and its files are intact."""
    try:
        m = read_manifest(dir)
    except ImageError:
        return None
    if m is None or m.inputs_hash != want_hash or m.builder_version != BUILDER_VERSION:
        return None
    paths = image_paths(dir)
    for path, info in ((paths.kernel, m.vmlinuz), (paths.initrd, m.initramfs),
                       (paths.rootfs, m.rootfs), (paths.dax_initrd, m.dax_initramfs)):
        if not path.is_file() or path.stat().st_size != info.size:
            return None
        if sha256_file(path) != info.sha256:
            return None
    if not (paths.busybox_rootfs / "bin/busybox").is_file():
        return None
    return m


def build_image(opts: BuildOptions, progress: Progress, force: bool = False) -> Manifest:
    """The image for `opts`, built unless an identical one is already in place."""
    _check_options(opts)
    apt = debs.Apt(opts.dir / "cache/apt")
    progress("resolving package versions")
    inputs = resolve_inputs(opts, apt)
    if not force and (m := cached_manifest(opts.dir, inputs.hash)) is not None:
        with _locked(opts.dir, wait=False) as held:
            if held:  # a killed build may have left its temp dir; no build is running now
                remove_stale(opts.dir)
        progress("image is up to date")
        return m
    with _locked(opts.dir):
        if not force and (m := cached_manifest(opts.dir, inputs.hash)) is not None:
            progress("image is up to date (built by another process)")
            return m
        remove_stale(opts.dir)
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=_store(opts.dir)))
        os.chmod(build, 0o755)  # mkdtemp's 0700 would hide the image from non-root QEMU
        try:
            m = _build(opts, inputs, apt, build, progress)
            commit_generation(opts.dir, build)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        _prune_debs(opts.dir / "cache/debs", m.packages)
    progress(f"image ready: initramfs {m.initramfs.size / (1 << 20):.1f} MiB "
             f"in {m.build_seconds:.1f} s")
    return m


def _store(dir: Path) -> Path:
    store = dir / "store"
    store.mkdir(parents=True, exist_ok=True)
    return store


@contextlib.contextmanager
def _locked(dir: Path, wait: bool = True) -> Iterator[bool]:
    """Hold `<dir>/.lock`; yields False (not held) when `wait` is off and it is taken."""
    dir.mkdir(parents=True, exist_ok=True)
    with (dir / ".lock").open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _count(items: Sequence[object], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _fetcher(apt: debs.Apt, inputs: Inputs, debs_dir: Path, unpack_dir: Path,
             progress: Progress) -> Callable[[list[str]], Mapping[str, Path]]:
    def fetch(names: list[str]) -> Mapping[str, Path]:
        unknown = [n for n in names if n not in inputs.versions]
        if unknown:
            raise ImageError(f"package(s) {unknown} are not in the pinned version set")
        want = {n: inputs.versions[n] for n in names}
        todo = [n for n, v in want.items() if apt.cached_deb(debs_dir, n, v) is None]
        if todo:
            progress(f"downloading {_count(todo, 'package')} ({', '.join(todo)})")
        found = apt.download(want, debs_dir)
        progress(f"unpacking {_count(names, 'package')}")
        return {n: apt.unpack(deb, unpack_dir / n) for n, deb in found.items()}
    return fetch


def _stage_root(opts: BuildOptions, trees: Mapping[str, Path], inputs: Inputs,
                root: Path, progress: Progress) -> stage.KernelParts:
    kpkg = trees[inputs.kernel_package]
    modules_dir = next((kpkg / "lib/modules").glob("*/kernel"), kpkg)
    on_demand = [*opts.on_demand, *kmod.modules_under(modules_dir, opts.on_demand_dirs)]
    config = next(kpkg.glob("boot/config-*"), None)
    missing = dax.missing_kernel_config(config.read_text() if config else "")
    if missing:
        raise ImageError(f"{inputs.kernel_package}: the DAX guest image needs "
                         f"{', '.join(f'{opt}=y' for opt in missing)}")
    kernel = stage.stage_kernel(kpkg, root, opts.modules, on_demand)
    progress(f"kernel {kernel.version}: {len(kernel.modules)} modules at boot, "
              f"{kernel.on_demand} on demand")
    stage.stage_busybox(trees[debs.BUSYBOX_PACKAGE], root)
    count = stage.stage_python([trees[p] for p in debs.PYTHON_PACKAGES], root)
    progress(f"python stdlib: {count} files after pruning")
    bootstrap = root / stage.STDLIB / "importlib/_bootstrap_external.py"
    pycompile.check_magic(pycompile.guest_magic(bootstrap.read_text()))
    stage.stage_protobuf(trees[debs.PROTOBUF_PACKAGE], root)
    stage.stage_agent(inputs.agent_dir, root)
    runtime = stage.stage_oci_runtime(trees[opts.oci_runtime], opts.oci_runtime, root)
    stage.stage_config(root, runtime, kernel.modules)
    return kernel


def _build(opts: BuildOptions, inputs: Inputs, apt: debs.Apt, build: Path,
           progress: Progress) -> Manifest:
    started = time.monotonic()
    work, root, out = build / "work", build / "work/root", build / "image"
    fetch = _fetcher(apt, inputs, opts.dir / "cache/debs", work / "unpack", progress)
    trees = fetch(list(inputs.primary))
    kernel = _stage_root(opts, trees, inputs, root, progress)
    progress("resolving shared libraries")
    libs = add_shared_libs(root, fetch)
    sources = pycompile.python_sources(root)
    progress(f"compiling python ({len(sources)} files)")
    pycompile.compile_tree(root, "", sources)
    out.mkdir()
    copy_file(kernel.vmlinuz, out / "vmlinuz", 0o644)
    initramfs = _write_initramfs(root, work, out, opts.compression, progress)
    rootfs, dax_initramfs = _write_dax_image(root, trees, inputs, out, progress)
    stage.stage_busybox_rootfs(trees[debs.BUSYBOX_PACKAGE], build / "busybox")
    used = {debs.KERNEL_META, *inputs.primary, *libs}
    m = Manifest(
        inputs_hash=inputs.hash, builder_version=BUILDER_VERSION,
        kernel_version=kernel.version,
        packages=tuple(sorted((n, inputs.versions[n]) for n in used)),
        modules=kernel.modules, oci_runtime=opts.oci_runtime, compression=opts.compression,
        vmlinuz=_info(out / "vmlinuz"),
        initramfs=initramfs, rootfs=rootfs, dax_initramfs=dax_initramfs,
        build_time=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=round(time.monotonic() - started, 2))
    (out / "manifest.json").write_text(m.to_json())
    shutil.rmtree(work)
    return m


def _write_initramfs(root: Path, work: Path, out: Path, compression: str,
                     progress: Progress) -> FileInfo:
    progress(f"writing initramfs ({tree_size(root) / (1 << 20):.1f} MiB)")
    raw = work / "initramfs.cpio"
    with raw.open("wb") as f:
        write_tree(f, root, extra=DEV_NODES)
    if compression != "none":
        progress(f"compressing initramfs ({compression})")
    compress_file(raw, out / "initramfs.img", compression)
    return _info(out / "initramfs.img")


def _write_dax_image(root: Path, trees: Mapping[str, Path], inputs: Inputs, out: Path,
                     progress: Progress) -> tuple[FileInfo, FileInfo]:
    """rootfs.img (the same tree as the initramfs, as a DAX image) and the tiny initramfs
    that mounts it."""
    progress("writing the DAX image (ext4)")
    ident = bytes.fromhex(inputs.hash[:32])
    dax.write_rootfs_image(root, out / "rootfs.img", ident)
    kpkg = trees[inputs.kernel_package]
    modules_dir = next((kpkg / "lib/modules").glob("*/kernel"), kpkg)
    modules = kmod.resolve_modules(modules_dir, dax.MOUNT_MODULES, inputs.kernel_package)
    depends = {name: elf.module_depends(ko.read_bytes(), ko.name) for name, ko in modules}
    with (out / "initramfs-dax.img").open("wb") as f:
        write_archive(f, dax.mount_initramfs(
            trees[debs.BUSYBOX_PACKAGE] / "bin/busybox", modules_dir.parent.name, modules,
            depends, DEV_NODES, stage.FLOOR_SCRIPT))
    return _info(out / "rootfs.img"), _info(out / "initramfs-dax.img")


def _info(path: Path) -> FileInfo:
    return FileInfo(path.stat().st_size, sha256_file(path))


def _point(link: Path, target: str, store: Path) -> None:
    """Atomically make `link` a symlink to `target` (a real directory there is moved aside)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_dir() and not link.is_symlink():
        link.rename(tempfile.mkdtemp(prefix=".stale-", dir=store) + "/old")
    tmp = link.with_name(f".{link.name}.new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def commit_generation(dir: Path, build: Path) -> None:
    """Make the finished `store/.build-*` the live image and demo rootfs (caller holds lock)."""
    gen = build.with_name("gen-" + build.name.removeprefix(".build-"))
    build.rename(gen)
    store = _store(dir)
    _point(dir / "image", os.path.relpath(gen / "image", dir), store)
    _point(dir / "rootfs/busybox", os.path.relpath(gen / "busybox", dir / "rootfs"), store)
    remove_stale(dir)


def remove_stale(dir: Path) -> None:
    """Drop interrupted builds and generations no symlink points at (caller holds the lock)."""
    store = _store(dir)
    live = {p.resolve().parent for p in (dir / "image", dir / "rootfs/busybox") if p.exists()}
    for entry in store.iterdir():
        if entry.name.startswith((".build-", ".stale-", "gen-")) and entry.resolve() not in live:
            shutil.rmtree(entry, ignore_errors=True)


def _prune_debs(debs_dir: Path, packages: tuple[tuple[str, str], ...]) -> None:
    """Keep only the .debs of the packages this image was built from."""
    keep = [debs.deb_glob(n, v) for n, v in packages]
    for deb in debs_dir.glob("*.deb"):
        if not any(fnmatch.fnmatchcase(deb.name, pattern) for pattern in keep):
            deb.unlink()
