"""`pykata plan`: bundle and Pod inputs, JSON and table output, errors. Boots nothing: the
QEMU binary is a script that prints a device list, and the host is a fake /sys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pykata.cli.main import EXIT_PYKATA_ERROR, main
from pykata.domain.errors import SpecError
from pykata.plan.pod import plan_pod, quantity

KEYS = ["vcpus", "max_vcpus", "memory_mib", "max_memory_mib", "static", "memory_hotplug",
        "cpu_hotplug", "boot", "boot_reason", "grow_to", "qemu_argv", "warnings", "reasons",
        "numa", "devices", "network", "cgroup", "cgroups", "port_forward"]
POD = """\
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: app
    resources: {limits: {cpu: 1500m, memory: 512Mi}}
  - name: side
    resources: {requests: {memory: 64Mi}}
"""


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\necho 'name \"pc-dimm\", desc \"DIMM\"'\n"
                    "echo 'name \"virtio-mem-pci\", bus PCI'\n")
    qemu.chmod(0o755)
    conf = tmp_path / "c.toml"
    conf.write_text(f'[hypervisor.qemu]\npath = "{qemu}"\naccel = "tcg"\n'
                    f'[image]\ndir = "{tmp_path}/img"\n')
    sysfs = tmp_path / "sys"
    (sysfs / "devices/system/cpu").mkdir(parents=True)
    (sysfs / "devices/system/cpu/online").write_text("0-7\n")
    for n in (0, 1):
        (sysfs / f"devices/system/node/node{n}").mkdir(parents=True)
        (sysfs / f"devices/system/node/node{n}/meminfo").write_text(
            f"Node {n} MemTotal:        8388608 kB\nNode {n} MemFree: 1 kB\n")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    res = {"cpu": {"quota": 200000, "period": 100000}, "memory": {"limit": 1 << 30}}
    (bundle / "config.json").write_text(json.dumps({"linux": {"resources": res}}))
    pod = tmp_path / "pod.yaml"
    pod.write_text(POD)
    return {"conf": conf, "sysfs": sysfs, "bundle": bundle, "pod": pod}


def _plan(host: dict[str, Path], capsys: pytest.CaptureFixture[str], *extra: str) -> Any:
    argv = ["plan", "--config", str(host["conf"]), "--sysfs-root", str(host["sysfs"]), *extra]
    assert main(argv) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "want"),
    [
        ([], (3, 8, 3072, 16384, False, "pc-dimm", True)),
        (["--annotation", "io.kubernetes.cri.sandbox-memory=536870912"],
         (1, 8, 2560, 16384, False, "pc-dimm", True)),
    ],
    ids=["bundle-limits", "sandbox-annotation-wins"],
)
def test_plan_bundle_json(host: dict[str, Path], capsys: pytest.CaptureFixture[str],
                          extra: list[str], want: tuple[Any, ...]) -> None:
    doc = json.loads(_plan(host, capsys, "--bundle", str(host["bundle"]), "--json", *extra))
    assert list(doc) == KEYS
    assert tuple(doc[k] for k in KEYS[:7]) == want
    argv = " ".join(doc["qemu_argv"])
    assert f"-smp {want[0]},maxcpus=8 -m {want[2]}M,slots=10,maxmem=16384M" in argv


def test_plan_run_is_static(host: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(_plan(host, capsys, "--bundle", str(host["bundle"]), "--json", "--run"))
    assert tuple(doc[k] for k in KEYS[:7]) == (3, 3, 3072, 3072, True, "none", False)
    assert "-smp 3,maxcpus=3 -m 3072M " in " ".join(doc["qemu_argv"]) + " "


def test_plan_bundle_table(host: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = _plan(host, capsys, "--bundle", str(host["bundle"]))
    assert "vCPUs           3 (max 8)" in out
    assert "linux.resources.cpu.quota/period = 200000/100000 = 2 CPUs" in out
    assert "-smp 3,maxcpus=8" in out


def test_plan_pod(host: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(_plan(host, capsys, "--pod", str(host["pod"]), "--json"))
    assert (doc["vcpus"], doc["memory_mib"], doc["pod"]) == (3, 2560, "web")
    assert doc["overhead"] == {"cpu": "1500m", "memory": "2048Mi"}
    assert any("side requests memory 64Mi without a limit" in w for w in doc["warnings"])
    table = _plan(host, capsys, "--pod", str(host["pod"]))
    assert "pod overhead    cpu 1500m, memory 2048Mi" in table


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda h: (h["pod"].write_text("kind: Deployment\n"), ["--pod", str(h["pod"])]),
         "kind: expected a Pod manifest, got kind 'Deployment'"),
        (lambda h: (h["bundle"].joinpath("config.json").write_text(
            '{"linux": {"resources": {"cpu": {"quota": 5, "period": 0}}}}'),
            ["--bundle", str(h["bundle"])]),
         r"linux.resources.cpu.period: must be more than 0, got 0"),
        (lambda h: (None, ["--bundle", str(h["bundle"]), "--annotation", "novalue"]),
         "--annotation: novalue: expected KEY=VALUE"),
    ],
    ids=["not-a-pod", "zero-period", "bad-annotation-arg"],
)
def test_plan_errors(host: dict[str, Path], capsys: pytest.CaptureFixture[str],
                     setup: Any, match: str) -> None:
    _, extra = setup(host)
    argv = ["plan", "--config", str(host["conf"]), "--sysfs-root", str(host["sysfs"]), *extra]
    assert main(argv) == EXIT_PYKATA_ERROR
    assert match in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "want"),
    [("500m", "0.5"), ("2", "2"), (2, "2"), ("1.5", "1.5"), ("512Mi", str(512 << 20)),
     ("1G", "1000000000"), ("1Gi", str(1 << 30))],
)
def test_quantity(text: object, want: str) -> None:
    assert quantity(text, "pod.yaml", "x") == type(quantity(1, "", ""))(want)


@pytest.mark.parametrize("text", ["1.5.2", "lots", "-1", "1Zi", True, None])
def test_bad_quantity_names_field_and_value(text: object) -> None:
    with pytest.raises(SpecError, match=r"pod.yaml: spec.x: not a Kubernetes quantity"):
        quantity(text, "pod.yaml", "spec.x")


@pytest.mark.parametrize(
    ("doc", "want"),
    [
        ({"kind": "Pod", "spec": {"containers": [{"name": "a"}]}}, (0.0, 0)),
        ({"kind": "Pod", "spec": {"containers": [
            {"resources": {"limits": {"cpu": "250m", "memory": "128Mi"}}},
            {"resources": {"limits": {"cpu": "250m", "memory": "128Mi"}}}]}}, (0.5, 256)),
        ({"kind": "Pod", "spec": {
            "initContainers": [{"resources": {"limits": {"cpu": "2", "memory": "64Mi"}}}],
            "containers": [{"resources": {"limits": {"cpu": "1", "memory": "128Mi"}}}]}},
         (2.0, 128)),
    ],
    ids=["no-limits", "sum", "init-max"],
)
def test_plan_pod_workload(doc: dict[str, Any], want: tuple[float, int]) -> None:
    w = plan_pod(doc, "pod.yaml").workload
    assert (w.vcpus, w.memory_mib) == want


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ([], "kind: expected a Pod manifest, got kind 'list'"),
        ({"kind": "Pod", "spec": {"containers": []}}, "spec.containers: a Pod needs"),
        ({"kind": "Pod", "spec": {"containers": [{"resources": {"limits": {"memory": "1Mi"}}}]}},
         r"spec.containers\[0\].resources.limits.memory: '1Mi' \(1 MiB\) is below"),
        ({"kind": "Pod", "spec": {"containers": [{"resources": {"limits": {"cpu": "x"}}}]}},
         r"spec.containers\[0\].resources.limits.cpu: not a Kubernetes quantity: 'x'"),
    ],
    ids=["not-a-mapping", "no-containers", "memory-too-small", "bad-cpu"],
)
def test_bad_pod(doc: object, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        plan_pod(doc, "pod.yaml")


HOSTS = Path(__file__).resolve().parent.parent / "fixtures" / "hosts"


def _numa_plan(host: dict[str, Path], capsys: pytest.CaptureFixture[str], sysfs: str,
               numa: str, *extra: str) -> Any:
    conf = host["conf"].read_text().replace("[hypervisor.qemu]\n", f"[hypervisor.qemu]\n{numa}")
    host["conf"].write_text(conf)
    argv = ["plan", "--config", str(host["conf"]), "--sysfs-root", str(HOSTS / sysfs),
            "--bundle", str(host["bundle"]), *extra]
    assert main(argv) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("sysfs", "numa", "nodes"),
    [
        # max_vcpus = the host's 96 CPUs: no single node (48 CPUs) fits, so it spans.
        ("two-socket-8gpu", "enable_numa = true\n",
         [([0], 48, 1536), ([1], 48, 1536)]),
        ("two-socket-8gpu", "enable_numa = true\ndefault_maxvcpus = 4\n",
         [([0], 4, 3072)]),
        ("this-host", 'enable_numa = true\nnuma_mapping = ["0", "0"]\n',
         [([0], 1, 1536), ([0], 1, 1536)]),
    ],
    ids=["two-socket-spanning", "two-socket-collapsed", "this-host-mapping-0-0"],
)
def test_plan_numa_json(host: dict[str, Path], capsys: pytest.CaptureFixture[str], sysfs: str,
                        numa: str, nodes: list[tuple[list[int], int, int]]) -> None:
    doc = json.loads(_numa_plan(host, capsys, sysfs, numa, "--json"))
    got = [(n["host_nodes"], len(n["vcpus"]), n["memory_mib"]) for n in doc["numa"]]
    assert got == nodes
    assert [n["guest_node"] for n in doc["numa"]] == list(range(len(nodes)))
    assert doc["devices"] == []
    argv = " ".join(doc["qemu_argv"])
    assert "memory-backend=mem0" not in argv and "id=mem0" not in argv
    assert argv.count("-numa node,") == len(nodes)
    assert argv.count("policy=bind") == len(nodes)
    assert any("guest node" in r for r in doc["reasons"])


def test_plan_numa_off_is_null(host: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(_numa_plan(host, capsys, "two-socket-8gpu", "", "--json"))
    assert (doc["numa"], doc["devices"]) == (None, [])
    assert "-machine q35,memory-backend=mem0" in " ".join(doc["qemu_argv"])


def test_plan_numa_warnings_join(host: dict[str, Path],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(_numa_plan(host, capsys, "memory-only-node", "enable_numa = true\n",
                                "--json"))
    assert [n["host_nodes"] for n in doc["numa"]] == [[0], [1]]
    assert "host node 2 has 65536 MiB and no CPUs (memory only): no guest node mirrors it" \
        in doc["warnings"]


def test_plan_numa_table(host: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = _numa_plan(host, capsys, "two-socket-8gpu", "enable_numa = true\n")
    assert "guest node 0    host node(s) 0, 1536 MiB, vCPUs 0,2,4," in out
    assert "guest node 1    host node(s) 1, 1536 MiB, vCPUs 1,3,5," in out


def test_plan_numa_error(host: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    conf = host["conf"].read_text().replace(
        "[hypervisor.qemu]\n", '[hypervisor.qemu]\nenable_numa = true\nnuma_mapping = ["7"]\n')
    host["conf"].write_text(conf)
    argv = ["plan", "--config", str(host["conf"]), "--sysfs-root", str(HOSTS / "this-host"),
            "--bundle", str(host["bundle"])]
    assert main(argv) == EXIT_PYKATA_ERROR
    assert "numa_mapping entry '7': host has nodes 0" in capsys.readouterr().err


def test_plan_gpu_bundle(host: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """A bundle passing through a GPU on host node 1 (IOMMU group 40): right-sized onto
    node 1 (not node 0, the first that fits), the device behind guest node 0's expander."""
    doc = json.loads((host["bundle"] / "config.json").read_text())
    doc["linux"]["devices"] = [{"path": "/dev/vfio/vfio"}, {"path": "/dev/vfio/40"}]
    (host["bundle"] / "config.json").write_text(json.dumps(doc))
    out = json.loads(_numa_plan(host, capsys, "two-socket-8gpu",
                                "enable_numa = true\ndefault_maxvcpus = 4\n", "--json"))
    assert [n["host_nodes"] for n in out["numa"]] == [[1]]
    assert out["devices"] == [{"bdf": "0000:9a:00.0", "host_node": 1, "guest_node": 0,
                               "bus": "rp-numa0-0"}]
    argv = " ".join(out["qemu_argv"])
    assert "pxb-pcie,id=pxb-numa0,bus=pcie.0,bus_nr=32,numa_node=0" in argv
    assert "vfio-pci,host=0000:9a:00.0,bus=rp-numa0-0" in argv
    table = _numa_plan(host, capsys, "two-socket-8gpu", "")
    assert "device 0000:9a:00.0 host node 1, guest node 0, root port rp-numa0-0" in table
