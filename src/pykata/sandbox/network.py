"""A sandbox's pod network on the host: read the pod's namespace, plan, create the taps and
tc redirects before QEMU starts, record them for leftover cleanup, remove them at teardown.

The taps are not persistent: once QEMU (and this process) closed their fds they vanish,
also when QEMU is killed. The CNI plugin's interfaces are left alone but for the ingress
qdisc added to each, which teardown (or `clear_network` for a dead sandbox) removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os

from pykata.domain.errors import NetworkError
from pykata.host import netns
from pykata.plan.network import NetworkPlan, NetworkRequest, nic_options
from pykata.plan.qemu import QemuOption
from pykata.protocol.network import setup_network_request
from pykata.protocol.pb import agent_pb2 as pb

log = logging.getLogger(__name__)

RECORD = "network.json"
_NETNS_DIRS = ("/var/run/netns/", "/run/netns/")


class AttachedNetwork:
    """The taps of a planned network, open; their fds go to QEMU, then are closed here."""

    def __init__(self, plan: NetworkPlan, fds: list[int]) -> None:
        self.plan, self.fds = plan, fds

    def qemu(self, bus: str) -> tuple[list[QemuOption], list[int]]:
        """QEMU's options for the NICs and the fds it must inherit."""
        return list(nic_options(self.plan, self.fds, bus)), list(self.fds)

    def close_fds(self) -> None:
        while self.fds:
            os.close(self.fds.pop())

    def request(self, req: NetworkRequest) -> pb.SetupNetworkRequest:
        return setup_network_request([n.interface for n in self.plan.nics], self.plan.routes,
                                     req.hostname, read_resolv_conf(req))


def read_resolv_conf(req: NetworkRequest) -> str:
    """The spec's /etc/resolv.conf bind source, else `ip netns`'s per-namespace file
    (/etc/netns/NAME/resolv.conf), else nothing."""
    candidates = [req.resolv_conf] if req.resolv_conf else []
    for prefix in _NETNS_DIRS:
        if req.netns.startswith(prefix):
            candidates.append(f"/etc/netns/{req.netns.removeprefix(prefix)}/resolv.conf")
    for path in candidates:
        try:
            with open(path) as f:
                return f.read(65536)
        except OSError:
            continue
    return ""


def write_record(state_dir: str, plan: NetworkPlan) -> None:
    with open(os.path.join(state_dir, RECORD), "w") as f:
        json.dump({"netns": plan.netns, "links": [n.link for n in plan.nics],
                   "taps": [n.tap for n in plan.nics]}, f)


async def attach_network(stack: contextlib.AsyncExitStack, plan: NetworkPlan,
                         state_dir: str) -> AttachedNetwork:
    """Creates the planned taps and redirects; their removal is registered on `stack`
    before anything exists, the record is written before anything is created."""
    for why in plan.skipped:
        log.info("network namespace %s: skipped %s", plan.netns, why)
    write_record(state_dir, plan)
    stack.push_async_callback(detach, plan.netns, [n.link for n in plan.nics],
                              [n.tap for n in plan.nics])
    fds = await asyncio.to_thread(netns.in_netns, plan.netns,
                                  functools.partial(netns.create_taps, plan.nics))
    attached = AttachedNetwork(plan, fds)
    stack.callback(attached.close_fds)
    return attached


def detach_now(namespace: str, links: list[str], taps: list[str]) -> list[str]:
    """Removes the redirects and taps; a namespace already gone took them along."""
    if not links and not taps:
        return []
    try:
        return netns.in_netns(namespace, functools.partial(netns.remove_redirects, links,
                                                           taps))
    except NetworkError as exc:
        if exc.why == "does not exist":
            return []
        raise


async def detach(namespace: str, links: list[str], taps: list[str]) -> None:
    try:
        for done in await asyncio.to_thread(detach_now, namespace, links, taps):
            log.debug("network namespace %s: %s", namespace, done)
    except NetworkError as exc:
        log.error("teardown: %s", exc)


def clear_network(state_dir: str) -> list[str]:
    """What a dead sandbox's record names: its redirects and taps, removed."""
    try:
        with open(os.path.join(state_dir, RECORD)) as f:
            record = json.load(f)
        namespace, links, taps = record["netns"], record["links"], record["taps"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [f"{namespace}: {d}" for d in detach_now(namespace, list(links), list(taps))]
