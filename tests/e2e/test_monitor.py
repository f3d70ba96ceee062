"""`pykata monitor` against a real sandbox, scraped by a real Prometheus (Debian's, started
here on loopback with its own config and data directory, stopped by pid): the sandbox's
hypervisor and guest series reach Prometheus labelled with its id while it runs, and are
gone from /metrics once it is."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Pykata, leftovers, sandbox_dirs
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "pykata.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def monitor(pykata: Pykata) -> Iterator[str]:
    """`pykata monitor` on a loopback port, stopped by its pid; yields its /metrics URL."""
    port = _free_port()
    env = {**os.environ, "PYKATA_CONF_FILE": str(pykata.config)}
    proc = subprocess.Popen([sys.executable, "-m", "pykata.cli.main", "monitor", "--listen",
                             f"127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        assert b"/metrics" in proc.stdout.readline(), proc.stderr.read() if proc.stderr else ""
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


@pytest.fixture
def prometheus(monitor: str, tmp_path: Path) -> Iterator[str]:
    """A Prometheus scraping `monitor` every second; yields its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    target = monitor.removeprefix("http://").removesuffix("/metrics")
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "pykata",
                            "static_configs": [{"targets": [target]}]}]}))
    port = _free_port()
    proc = subprocess.Popen([binary, f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "prometheus.log", "wb"))  # noqa: SIM115
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "prometheus.log").read_text()[-2000:]
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as reply:
        doc = json.loads(reply.read())
    assert doc["status"] == "success", doc
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def _samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_a_running_sandbox_is_scraped_then_gone(pykata: Pykata, monitor: str,
                                                prometheus: str) -> None:
    env = {**os.environ, "PYKATA_CONF_FILE": str(pykata.config)}
    run = subprocess.Popen([sys.executable, "-m", "pykata.cli.main", "run", "--", "sh", "-c",
                            "echo up; exec sleep 300"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert run.stdout is not None and run.stdout.readline() == b"up\n"
        [state] = sandbox_dirs(pykata.state_dir)
        mine = {"sandbox_id": state.name, "cri_name": "", "cri_namespace": "", "cri_uid": ""}
        deadline = time.monotonic() + 10
        samples = _samples(monitor)
        # Prometheus may have scraped it while it started: no error for that
        while mine not in [labels for labels, _ in samples.get("pykata_agent_threads", [])] \
                and time.monotonic() < deadline:
            time.sleep(0.2)
            samples = _samples(monitor)
        assert samples["pykata_running_sandboxes"] == [({}, 1.0)]
        pss = dict((labels["sandbox_id"], v) for labels, v in
                   samples["pykata_hypervisor_pss_bytes"])
        assert pss[state.name] > 50 << 20  # QEMU with guest RAM mapped
        assert any(labels == {**mine, "item": "vmrss"} and v > 0
                   for labels, v in samples["pykata_hypervisor_proc_status"])
        for component in ("virtiofsd", "shim"):
            assert any(labels == mine for labels, _ in samples[f"pykata_{component}_threads"])
        assert (({**mine, "kind": "boot"}, 1.0) in samples["pykata_sandbox_vcpus"])
        boot = [labels["boot"] for labels, _ in samples["pykata_sandbox_info"]]
        assert boot in (["clone"], ["cold"])
        # the guest's, from its agent through the sandbox's owner
        total = dict((labels["item"], v) for labels, v in samples["pykata_guest_meminfo"]
                     if labels["sandbox_id"] == state.name)
        assert 1 << 30 < total["memtotal"] < 4 << 30 and 0 < total["memfree"] < total["memtotal"]
        assert any(labels == {**mine, "cpu": "cpu0", "item": "idle"} and v > 0
                   for labels, v in samples["pykata_guest_cpu_time"])
        assert any(labels == {**mine, "interface": "lo", "item": "rx_bytes"}
                   for labels, _ in samples["pykata_guest_netdev_stat"])
        assert any(labels == mine for labels, _ in samples["pykata_agent_threads"])
        assert "pykata_monitor_scrape_errors_total" not in samples
        [(labels, ready)] = [(labels, v) for labels, v in samples["pykata_sandbox_ready_seconds"]
                             if labels["sandbox_id"] == state.name]
        assert labels["boot"] in ("clone", "cold") and 0 < ready < 60
        # and through Prometheus: a hypervisor and a guest series of this sandbox
        wanted = [f'pykata_hypervisor_pss_bytes{{sandbox_id="{state.name}"}}',
                  f'pykata_guest_meminfo{{sandbox_id="{state.name}",item="memtotal"}}']
        deadline = time.monotonic() + 30
        while not all(_query(prometheus, q) for q in wanted) and time.monotonic() < deadline:
            time.sleep(0.5)
        for q in wanted:
            [series] = _query(prometheus, q)
            assert float(series["value"][1]) > 0, series
        # the Grafana dashboard's queries are valid PromQL, and those on memory find this pod
        dashboard = json.loads(DASHBOARD.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                found = _query(prometheus, target["expr"].replace("$sandbox", state.name))
                if "memory" in panel["title"] or "PSS" in panel["title"]:
                    assert found, (panel["title"], target["expr"])
    finally:
        run.terminate()
        run.communicate(timeout=60)
    after = _samples(monitor)
    assert after["pykata_running_sandboxes"] == [({}, 0.0)]
    assert state.name not in str(after)
    assert leftovers(pykata.state_dir) == []
