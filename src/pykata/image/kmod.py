"""Which kernel modules the guest loads, and in what order.

Two kinds: boot modules, which the agent loads itself (the devices'), and on-demand modules,
which the guest kernel asks for when a container first needs them (`request_module`, e.g.
`rtnl-link-bridge` for `ip link add type bridge`): it runs busybox modprobe, which reads
the `modules.dep` and `modules.alias` written here.

`order_modules` and `depmod_files` are pure: requested names plus a name -> depends map
give a load order in which every module follows its dependencies. `index_modules` and
`resolve_modules` read the unpacked kernel package. Nothing here loads modules or runs
depmod/modprobe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pykata.domain.errors import ImageError
from pykata.image import elf

DEFAULT_MODULES: tuple[str, ...] = (
    "virtio_pci", "virtio_console", "fuse", "virtiofs", "vsock",
    "vmw_vsock_virtio_transport", "virtio_mem", "virtio_net", "virtio_balloon",
)
# What containers ask the kernel for (Kubernetes' CRI validation: bridge in a privileged
# container or one with CAP_NET_ADMIN; CNI plugins, kube-proxy, iptables/nft inside pods).
ON_DEMAND_MODULES: tuple[str, ...] = (
    "bridge", "br_netfilter", "veth", "vxlan", "8021q", "tun", "overlay", "dummy",
    "macvlan", "ipvlan", "bonding", "geneve", "ip_gre", "ipip", "wireguard",
)
# Every module below these directories (of /lib/modules/<version>/kernel) is on demand too:
# the netfilter families (nf_tables and its expressions, x_tables, iptables, conntrack,
# NAT, ipset, IPVS) for IPv4, IPv6 and bridges.
ON_DEMAND_DIRS: tuple[str, ...] = (
    "net/netfilter", "net/ipv4/netfilter", "net/ipv6/netfilter", "net/bridge",
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


def modules_under(modules_dir: Path, dirs: Sequence[str]) -> list[str]:
    """The names of the modules below `dirs` (relative to `modules_dir`), sorted."""
    return sorted({canonical(ko.stem) for d in dirs for ko in (modules_dir / d).rglob("*.ko")})


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


def depmod_files(files: Mapping[str, str], depends: Mapping[str, Sequence[str]],
                 aliases: Mapping[str, Sequence[str]]) -> tuple[str, str]:
    """`modules.dep` and `modules.alias` for busybox modprobe. `files`: module name -> its
    file, relative to the modules directory. A module's line lists its whole dependency
    closure, nearest first (modprobe loads from the end of the line)."""
    dep_lines = []
    for name in sorted(files):
        closure = order_from_map([name], depends)[:-1]
        dep_lines.append(f"{files[name]}: {' '.join(files[d] for d in reversed(closure))}"
                         .rstrip())
    alias_lines = [f"alias {alias} {name}" for name in sorted(aliases)
                   for alias in aliases[name]]
    return "\n".join(dep_lines) + "\n", "\n".join(alias_lines) + "\n"
