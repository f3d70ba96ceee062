"""Kernel module load order from a depends map."""

from __future__ import annotations

import pytest

from pykata.domain.errors import ImageError
from pykata.image.kmod import DEFAULT_MODULES, order_from_map

# The real shape of the Debian 6.1 cloud kernel's modules, trimmed.
CLOUD = {
    "virtio_pci": ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev"],
    "virtio_ring": [], "virtio": [], "virtio_pci_modern_dev": [],
    "virtio_pci_legacy_dev": [],
    "virtio_console": ["virtio", "virtio_ring"],
    "fuse": [], "virtiofs": ["fuse", "virtio", "virtio_ring"],
    "vsock": [], "vmw_vsock_virtio_transport_common": ["vsock", "virtio", "virtio_ring"],
    "vmw_vsock_virtio_transport": ["vmw_vsock_virtio_transport_common", "virtio",
                                   "virtio_ring", "vsock"],
    "virtio_mem": ["virtio"], "failover": [], "net_failover": ["failover"],
    "virtio_net": ["net_failover", "virtio", "virtio_ring"],
    "virtio_balloon": ["virtio", "virtio_ring"],
}


@pytest.mark.parametrize(("requested", "depmap", "expected"), [
    (["a"], {"a": []}, ["a"]),
    (["c"], {"c": ["b"], "b": ["a"], "a": []}, ["a", "b", "c"]),
    (["x", "y"], {"x": ["z"], "y": ["z"], "z": []}, ["z", "x", "y"]),
    (["y", "x"], {"x": [], "y": []}, ["y", "x"]),
    (["a", "a"], {"a": []}, ["a"]),
    (["d"], {"d": ["b", "a"], "a": [], "b": []}, ["a", "b", "d"]),
    (["virtio-pci"], {"virtio_pci": ["virtio-ring"], "virtio_ring": []},
     ["virtio_ring", "virtio_pci"]),
], ids=["single", "chain", "shared-dep-once", "request-order-kept", "duplicate-request",
        "deps-sorted", "dash-is-underscore"])
def test_order(requested: list[str], depmap: dict[str, list[str]],
               expected: list[str]) -> None:
    assert order_from_map(requested, depmap) == expected


def test_default_modules_every_dep_first() -> None:
    order = order_from_map(DEFAULT_MODULES, CLOUD)
    assert set(order) == set(CLOUD)
    for name in order:
        for dep in CLOUD[name]:
            assert order.index(dep) < order.index(name), (dep, name)


@pytest.mark.parametrize(("requested", "depmap", "message"), [
    (["a"], {"a": ["b"], "b": ["a"]}, "cycle: a -> b -> a"),
    (["a"], {"a": ["a"]}, "cycle: a -> a"),
    (["a"], {"a": ["gone"]}, "'gone' not found.*needed by a"),
    (["nope"], {}, "'nope' not found"),
], ids=["cycle", "self-cycle", "missing-dep", "missing-requested"])
def test_errors(requested: list[str], depmap: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ImageError, match=message):
        order_from_map(requested, depmap)


def test_depmod_files_list_each_closure_nearest_first() -> None:
    from pykata.image.kmod import depmod_files

    files = {"llc": "llc.ko.xz", "stp": "stp.ko.xz", "bridge": "bridge.ko.xz",
             "virtio": "virtio.ko"}
    depends = {"llc": [], "stp": ["llc"], "bridge": ["stp", "llc"], "virtio": []}
    dep, alias = depmod_files(files, depends, {"bridge": ["rtnl-link-bridge"], "llc": []})
    assert dep.splitlines() == ["bridge.ko.xz: stp.ko.xz llc.ko.xz", "llc.ko.xz:",
                                "stp.ko.xz: llc.ko.xz", "virtio.ko:"]
    assert alias == "alias rtnl-link-bridge bridge\n"
