"""Which kernel modules the guest loads, and in what order.

`order_modules` is pure: requested names plus a name -> depends map give a load order in
which every module follows its dependencies. `index_modules` and `read_depends` read the
unpacked kernel package. Nothing here loads modules or runs depmod/modprobe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pykata.domain.errors import ImageError
from pykata.image import elf

DEFAULT_MODULES: tuple[str, ...] = (
    "virtio_pci", "virtio_console", "fuse", "virtiofs", "vsock",
    "vmw_vsock_virtio_transport", "virtio_mem", "virtio_net", "overlay",
)


def canonical(name: str) -> str:
    """Module names treat '-' and '_' alike; the kernel reports '_'."""
    return name.replace("-", "_")


def order_modules(
    requested: Sequence[str], depends: Callable[[str], Sequence[str]]
) -> list[str]:
    """Load order: depth-first, dependencies (in sorted order) before dependants.

    `depends(name)` raises ImageError for an unknown module. A cycle is an error that
    names the modules in it.
    """
    order: list[str] = []
    done: set[str] = set()
    stack: list[str] = []

    def visit(name: str, needed_by: str | None) -> None:
        name = canonical(name)
        if name in done:
            return
        if name in stack:
            cycle = " -> ".join([*stack[stack.index(name):], name])
            raise ImageError(f"kernel module dependency cycle: {cycle}")
        stack.append(name)
        try:
            deps = depends(name)
        except ImageError as exc:
            where = f" (needed by {needed_by})" if needed_by else ""
            raise ImageError(f"{exc}{where}") from exc
        for dep in sorted(canonical(d) for d in deps):
            visit(dep, name)
        stack.pop()
        done.add(name)
        order.append(name)

    for name in requested:
        visit(name, None)
    return order


def order_from_map(requested: Sequence[str], depmap: Mapping[str, Sequence[str]]) -> list[str]:
    """`order_modules` over an in-memory map (unknown names are an error)."""
    def depends(name: str) -> Sequence[str]:
        if name not in depmap:
            raise ImageError(f"kernel module {name!r} not found")
        return depmap[name]
    return order_modules(requested, depends)


def index_modules(modules_dir: Path) -> dict[str, Path]:
    """Module name -> .ko path under /lib/modules/<version>/kernel (uncompressed only)."""
    index: dict[str, Path] = {}
    for ko in sorted(modules_dir.rglob("*.ko")):
        index[canonical(ko.stem)] = ko
    compressed = next(iter(modules_dir.rglob("*.ko.*")), None)
    if not index and compressed is not None:
        raise ImageError(f"{modules_dir}: modules are compressed ({compressed.name}); "
                         "only uncompressed .ko are supported")
    return index


def resolve_modules(modules_dir: Path, requested: Sequence[str],
                    label: str) -> list[tuple[str, Path]]:
    """Requested modules and all their dependencies, in load order, with their files.

    `label` names the kernel package in errors (the unpack directory is temporary).
    """
    index = index_modules(modules_dir)

    def depends(name: str) -> Sequence[str]:
        ko = index.get(name)
        if ko is None:
            raise ImageError(f"kernel module {name!r} not found in {label}")
        return elf.module_depends(ko.read_bytes(), f"{label}: {ko.name}")

    return [(name, index[name]) for name in order_modules(requested, depends)]
