"""`pykata monitor [--listen ADDR:PORT]`: a Prometheus endpoint for every running sandbox.

On each scrape of `/metrics` it finds the running sandboxes (as `pykata inspect` does) and
reads them in parallel, waiting at most `--deadline` seconds for all of them. A sandbox not
read by then, or whose records fail, is left out of that scrape; one whose guest did not
answer is reported without the guest's figures; either counts one
`pykata_monitor_scrape_errors_total`, and the scrape itself succeeds. Metric families
follow Kata's (`kata_hypervisor_*` is `pykata_hypervisor_*`); docs/metrics.md has the
mapping.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import signal
import threading
import time
from collections.abc import Iterator

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from pykata.domain.errors import ConfigError
from pykata.host.config_files import load_config
from pykata.sandbox.metrics import COMPONENTS, SandboxMetrics, read_sandbox, sandbox_ids
from pykata.sandbox.owner_stats import Histogram

WORKERS = 16
GUEST_SHARE = 0.75


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("command line", "--listen", value, "expected ADDR:PORT")
    return host.strip("[]"), int(port)


class SandboxCollector(Collector):
    """prometheus-client calls `collect` once per scrape."""

    def __init__(self, state_root: str, deadline_s: float) -> None:
        self.state_root, self.deadline_s = state_root, deadline_s
        self.errors: dict[str, int] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(WORKERS, "pykata-monitor")
        self._lock = threading.Lock()

    def gather(self) -> list[SandboxMetrics]:
        ids = sandbox_ids(self.state_root)
        # The guest's figures get most of the deadline: a hung guest still leaves time to
        # report its host side.
        futures = {self._pool.submit(read_sandbox, self.state_root, i, "/proc",
                                     GUEST_SHARE * self.deadline_s): i for i in ids}
        done, _ = concurrent.futures.wait(futures, timeout=self.deadline_s)
        found = []
        with self._lock:
            for future, sandbox_id in futures.items():
                ok = future in done and future.exception() is None
                if ok:
                    found.append(future.result())
                else:
                    future.cancel()
                if not ok or found[-1].guest_error:  # a guest without figures counts too
                    self.errors[sandbox_id] = self.errors.get(sandbox_id, 0) + 1
        return found

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        yield from families(self.gather(), dict(self.errors))
        took = GaugeMetricFamily("pykata_monitor_scrape_duration_seconds",
                                 "How long reading the sandboxes took in this scrape.")
        took.add_metric([], time.monotonic() - started)
        yield took


# Every per-sandbox series: its id, and a CRI pod's name, namespace and uid (kata-monitor's
# label names; empty outside Kubernetes). No container ids: they would multiply the series.
LABELS = ["sandbox_id", "cri_name", "cri_namespace", "cri_uid"]


def _ids(s: SandboxMetrics) -> list[str]:
    return [s.sandbox_id, s.pod.get("name", ""), s.pod.get("namespace", ""),
            s.pod.get("uid", "")]


def families(sandboxes: list[SandboxMetrics], errors: dict[str, int]) -> Iterator[Metric]:
    """The metric families of one scrape: per component process figures (Kata's names with
    pykata's prefix), the guest's, pykata's sandbox figures, and the scrape errors so far."""
    label = LABELS
    running = GaugeMetricFamily("pykata_running_sandboxes", "Sandboxes read in this scrape.")
    running.add_metric([], len(sandboxes))
    yield running
    for component in COMPONENTS:
        prefix = f"pykata_{component}"
        fds = GaugeMetricFamily(f"{prefix}_fds", "Open file descriptors.", labels=label)
        threads = GaugeMetricFamily(f"{prefix}_threads", "Threads.", labels=label)
        stat = GaugeMetricFamily(f"{prefix}_proc_stat", "CPU time from /proc/<pid>/stat, in "
                                 "seconds (item utime or stime).", labels=[*label, "item"])
        status = GaugeMetricFamily(f"{prefix}_proc_status", "Memory from /proc/<pid>/status, "
                                   "in bytes (item vmrss, rssanon, ...).",
                                   labels=[*label, "item"])
        pss = GaugeMetricFamily(f"{prefix}_pss_bytes", "Proportional set size (shared pages "
                                "divided among their users).", labels=label)
        for s in sandboxes:
            p = s.processes.get(component)
            if p is None:
                continue
            fds.add_metric(_ids(s), p.fds)
            threads.add_metric(_ids(s), p.threads)
            stat.add_metric([*_ids(s), "utime"], p.utime_s)
            stat.add_metric([*_ids(s), "stime"], p.stime_s)
            for item, value in p.status.items():
                status.add_metric([*_ids(s), item], value)
            if p.pss_bytes:  # none for the agent (the guest has no smaps to give)
                pss.add_metric(_ids(s), p.pss_bytes)
        yield from (fds, threads, stat, status, pss)
    yield from guest_families(sandboxes)
    vcpus = GaugeMetricFamily("pykata_sandbox_vcpus", "vCPUs the VM booted with (kind boot), "
                              "has now (current) and may grow to (max).",
                              labels=[*label, "kind"])
    memory = GaugeMetricFamily("pykata_sandbox_memory_bytes", "Guest memory at boot (kind "
                               "boot), now (current) and its ceiling (max).",
                               labels=[*label, "kind"])
    info = GaugeMetricFamily("pykata_sandbox_info", "1 per sandbox: how it booted (cold or "
                             "clone) and how its memory is hot-plugged.",
                             labels=[*label, "boot", "memory_hotplug"])
    pinned = GaugeMetricFamily("pykata_sandbox_vcpus_pinned", "1 when each vCPU thread is "
                               "pinned to host CPUs.", labels=label)
    numa = GaugeMetricFamily("pykata_sandbox_guest_numa_node", "1 per guest NUMA node, with "
                             "the host nodes its memory is bound to.",
                             labels=[*label, "guest_node", "host_nodes"])
    for s in sandboxes:
        for kind, n in s.vcpus.items():
            vcpus.add_metric([*_ids(s), kind], n)
        for kind, n in s.memory_bytes.items():
            memory.add_metric([*_ids(s), kind], n)
        info.add_metric([*_ids(s), s.boot, s.memory_hotplug], 1)
        if s.pinned is not None:
            pinned.add_metric(_ids(s), int(s.pinned))
        for node, hosts in sorted(s.numa_nodes.items()):
            numa.add_metric([*_ids(s), str(node), hosts], 1)
    yield from (vcpus, memory, info, pinned, numa)
    yield from owner_families(sandboxes)
    failed = CounterMetricFamily("pykata_monitor_scrape_errors", "Sandboxes not read within "
                                 "the deadline, or whose records failed to read.",
                                 labels=["sandbox_id"])
    for sandbox_id, count in sorted(errors.items()):
        failed.add_metric([sandbox_id], count)
    yield failed


def owner_families(sandboxes: list[SandboxMetrics]) -> Iterator[Metric]:
    """What each sandbox's owner measured: its time to ready and its resizes."""
    ready = GaugeMetricFamily("pykata_sandbox_ready_seconds", "From the start of the "
                              "sandbox until its pod was attached, by boot path.",
                              labels=[*LABELS, "boot"])
    hotplug = HistogramMetricFamily(
        "pykata_hotplug_duration_seconds", "Resizes by hotplug, until the guest saw the new "
        "size, by what changed (op: cpu, pc-dimm, virtio-mem, or both) and direction.",
        labels=[*LABELS, "op", "direction"])
    rpc = HistogramMetricFamily(
        "pykata_shim_rpc_durations_histogram_milliseconds", "The shim's Task RPCs, by "
        "method (action), in milliseconds.", labels=[*LABELS, "action"])
    for s in sandboxes:
        if s.ready_s is not None:
            ready.add_metric([*_ids(s), s.boot], s.ready_s)
        for kind, h in sorted(s.hotplug.items()):
            hotplug.add_metric([*_ids(s), *kind.partition("/")[::2]], *_buckets(h))
        for method, h in sorted(s.rpc.items()):
            rpc.add_metric([*_ids(s), method], *_buckets(h))
    yield from (ready, hotplug, rpc)


def _buckets(h: Histogram) -> tuple[list[tuple[str, float]], float]:
    """prometheus-client's form: (upper bound, cumulative count) pairs, and the sum."""
    bounds = [*(str(b) for b in h.bounds), "+Inf"]
    cumulative = itertools.accumulate(h.counts or [0] * len(bounds))
    return list(zip(bounds, cumulative, strict=True)), h.total


def guest_families(sandboxes: list[SandboxMetrics]) -> Iterator[Metric]:
    """Kata's guest families, from the guest's /proc files."""
    label = LABELS
    meminfo = GaugeMetricFamily("pykata_guest_meminfo", "The guest's /proc/meminfo, in "
                                "bytes (item memtotal, memfree, ...).", labels=[*label, "item"])
    cpu = GaugeMetricFamily("pykata_guest_cpu_time", "The guest's /proc/stat CPU times, in "
                            "seconds (cpu: cpu for all, cpu0, ...).",
                            labels=[*label, "cpu", "item"])
    load = GaugeMetricFamily("pykata_guest_load", "The guest's load averages (item load1, "
                             "load5, load15).", labels=[*label, "item"])
    netdev = GaugeMetricFamily("pykata_guest_netdev_stat", "The guest's /proc/net/dev "
                               "counters.", labels=[*label, "interface", "item"])
    for s in sandboxes:
        g = s.guest
        if g is None:
            continue
        for item, size in g.meminfo.items():
            meminfo.add_metric([*_ids(s), item], size)
        for (name, item), seconds in g.cpu_seconds.items():
            cpu.add_metric([*_ids(s), name, item], seconds)
        for item, average in g.load.items():
            load.add_metric([*_ids(s), item], average)
        for (interface, item), count in g.netdev.items():
            netdev.add_metric([*_ids(s), interface, item], count)
    yield from (meminfo, cpu, load, netdev)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    host, port = parse_listen(args.listen)
    if not 0 < args.deadline <= 60:
        raise ConfigError("command line", "--deadline", args.deadline,
                          "expected seconds above 0, at most 60")
    registry = CollectorRegistry()
    registry.register(SandboxCollector(cfg.runtime.state_dir, args.deadline))
    server, thread = start_http_server(port, host, registry)
    print(f"pykata monitor: http://{args.listen}/metrics (sandboxes under "
          f"{cfg.runtime.state_dir})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    thread.join()
    return 0
