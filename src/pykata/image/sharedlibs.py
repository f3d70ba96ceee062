"""Close the staging tree over shared libraries: every ELF's DT_NEEDED and PT_INTERP.

`unresolved` is pure (what is needed vs what is there). `add_shared_libs` loops: scan the
tree, map missing sonames to Debian packages (debs.SONAME_PACKAGES), ask the caller to
fetch and unpack those, copy just the needed files, and scan again until nothing is missing.
It never looks at the host's own libraries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pykata.domain.errors import ImageError
from pykata.image import elf
from pykata.image.debs import package_for_soname
from pykata.image.files import copy_from_tree, resolve_in_tree

# Where the guest's loader finds libraries (Debian multiarch first), in search order.
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")


@dataclass(frozen=True)
class ElfNeeds:
    needed: tuple[str, ...]
    interp: str | None


@dataclass(frozen=True)
class Missing:
    sonames: dict[str, str]  # soname -> a file that needs it
    interps: dict[str, str]  # loader path -> a file that needs it


def scan_tree(root: Path) -> dict[str, ElfNeeds]:
    """Guest path -> needs, for every regular ELF file under `root`."""
    out: dict[str, ElfNeeds] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        with path.open("rb") as f:
            if not elf.is_elf(f.read(4)):
                continue
        data = path.read_bytes()
        guest = "/" + path.relative_to(root).as_posix()
        out[guest] = ElfNeeds(elf.needed(data, guest), elf.interpreter(data, guest))
    return out


def present_sonames(root: Path) -> set[str]:
    return {p.name for d in LIB_DIRS if (root / d).is_dir() for p in (root / d).iterdir()}


def unresolved(needs: Mapping[str, ElfNeeds], present: set[str], root_has: set[str]) -> Missing:
    """What `needs` asks for that is not there. A soname equal to a loader's file name is
    the loader itself (libc.so.6 lists ld-linux-x86-64.so.2): it needs no second copy."""
    interps = {n.interp for n in needs.values() if n.interp}
    loader_names = {PurePosixPath(i).name for i in interps}
    sonames: dict[str, str] = {}
    missing_interps: dict[str, str] = {}
    for guest, n in sorted(needs.items()):
        for soname in n.needed:
            if soname not in present and soname not in loader_names:
                sonames.setdefault(soname, guest)
        if n.interp and n.interp not in root_has:
            missing_interps.setdefault(n.interp, guest)
    return Missing(sonames, missing_interps)


def _find_lib(tree: Path, soname: str) -> str | None:
    for d in LIB_DIRS:
        if resolve_in_tree(tree, f"{d}/{soname}") is not None:
            return f"{d}/{soname}"
    return None


def _plan_packages(missing: Missing) -> dict[str, list[str]]:
    """Package -> what to take from it (sonames, or absolute loader paths)."""
    by_pkg: dict[str, list[str]] = {}
    for soname, needer in missing.sonames.items():
        by_pkg.setdefault(package_for_soname(soname, needer), []).append(soname)
    for interp, needer in missing.interps.items():
        pkg = package_for_soname(PurePosixPath(interp).name, needer)
        by_pkg.setdefault(pkg, []).append(interp)
    return by_pkg


def add_shared_libs(root: Path, fetch: Callable[[list[str]], Mapping[str, Path]]) -> list[str]:
    """Copy in every library the tree's ELF files need; returns the packages used.

    `fetch(packages)` downloads and unpacks packages and returns their unpacked trees.
    """
    used: set[str] = set()
    while True:
        needs = scan_tree(root)
        interps = {n.interp for n in needs.values() if n.interp}
        missing = unresolved(needs, present_sonames(root),
                             {i for i in interps if (root / i.lstrip("/")).exists()})
        if not missing.sonames and not missing.interps:
            return sorted(used)
        plan = _plan_packages(missing)
        if used.issuperset(plan):
            raise ImageError(f"shared libraries still missing after fetching {sorted(plan)}: "
                             f"{sorted(missing.sonames) + sorted(missing.interps)}")
        trees = fetch(sorted(plan))
        for pkg, items in sorted(plan.items()):
            used.add(pkg)
            for item in items:
                needer = missing.sonames.get(item) or missing.interps[item]
                _copy_lib(root, trees[pkg], pkg, item, needer)


def _copy_lib(root: Path, tree: Path, pkg: str, item: str, needer: str) -> None:
    """Copy a loader (absolute path) or a soname as a regular file at the same guest path."""
    rel = item.lstrip("/") if item.startswith("/") else _find_lib(tree, item)
    if rel is None:
        raise ImageError(f"{pkg} has no {item} in {', '.join(LIB_DIRS)} (needed by {needer})")
    copy_from_tree(tree, rel, root / rel)
