"""`pykata check` and `pykata env`: the verdicts (table-driven), the parsers, the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pykata.cli import check as check_cli
from pykata.cli import env as env_cli
from pykata.domain.checks import (
    CheckResult,
    HostReport,
    ImageReport,
    NumaNode,
    QemuCaps,
    Status,
    Tool,
)
from pykata.domain.config import Config, build_config
from pykata.domain.host import HostFacts
from pykata.host.checks import (
    parse_cgroup_mounts,
    parse_device_help,
    parse_list_help,
    read_numa,
    run_tool,
)
from pykata.host.topology import read_topology
from pykata.plan.checks import can_run, judge_host

# A host like the one pykata is developed on: no vmx/svm, /dev/kvm from kvm_pvm.
PVM_HOST = HostReport(
    kernel_release="6.1.0",
    facts=HostFacts(cpu_flags=frozenset({"hypervisor"}), kvm_usable=True, kvm_detail="",
                    vhost_vsock=False, online_cpus=2, mem_total_mib=24000),
    kvm_device=True, kvm_modules=("kvm", "kvm_pvm"),
    qemu=Tool(
        "/usr/bin/qemu-system-x86_64", True, "QEMU emulator version 7.2.22 (Debian)"),
    qemu_caps=QemuCaps(
        accels=frozenset({"tcg", "kvm"}), machines=frozenset({"q35", "pc"}),
        devices=frozenset({"virtio-serial-pci", "virtserialport", "vhost-user-fs-pci",
                           "vhost-vsock-pci", "pc-dimm", "virtio-mem-pci", "virtio-balloon-pci",
                           "virtio-pmem-pci"})),
    virtiofsd=Tool(
        "/usr/lib/qemu/virtiofsd", True, "virtiofsd version 7.2.22"),
    devices={"/dev/kvm": True, "/dev/vhost-vsock": False, "/dev/net/tun": True},
    modules={"vhost_vsock": False, "tun": True},
    cgroup="v1 (hybrid, v2 at /sys/fs/cgroup/unified)",
    numa=(NumaNode(0, "0-1", 5464),),
    euid=0,
    image_bytes=128 << 20,
)


def _facts(base: HostReport = PVM_HOST, **changes: Any) -> HostFacts:
    return dataclasses.replace(base.facts, **changes)


KVM_HOST = dataclasses.replace(PVM_HOST, facts=_facts(cpu_flags=frozenset({"vmx"})),
                               kvm_modules=("kvm", "kvm_intel"))
IMAGE_OK = ImageReport("current", "kernel 6.1.0-56-cloud-amd64, initramfs 30.0 MiB")


def _cfg(**sections: Any) -> Config:
    return build_config([("test.toml", sections)])


def _verdicts(host: HostReport = PVM_HOST, image: ImageReport = IMAGE_OK,
              cfg: Config | None = None) -> dict[str, CheckResult]:
    return {c.name: c for c in judge_host(host, image, cfg or Config())}


def test_pvm_host_reports_kvm_unusable_but_can_run_under_tcg() -> None:
    v = _verdicts()
    assert v["kvm"].status is Status.WARN
    assert "KVM unusable" in v["kvm"].detail and "kvm_pvm" in v["kvm"].detail
    assert "no vmx/svm" in v["kvm"].detail
    assert v["cpu virtualisation"].status is Status.WARN
    assert v["accelerator"].status is Status.PASS
    assert v["accelerator"].detail.startswith("tcg: CPU has no vmx/svm flag")
    assert can_run(list(v.values()))


def test_kvm_host_uses_kvm() -> None:
    v = _verdicts(KVM_HOST)
    assert v["kvm"].status is Status.PASS and "--boot" in v["kvm"].detail
    assert v["accelerator"].detail.startswith("kvm: CPU has vmx")
    assert all(c.status is Status.PASS for c in v.values())


def _tool(path: str, found: bool, version: str = "", error: str = "") -> Tool:
    return Tool(path, found, version, error)


@pytest.mark.parametrize(
    ("host", "cfg", "image", "name", "status", "says"),
    [
        (PVM_HOST, _cfg(hypervisor={"qemu": {"accel": "kvm"}}), IMAGE_OK, "accelerator",
         Status.FAIL, "no vmx/svm"),
        (dataclasses.replace(PVM_HOST, kvm_device=False, facts=_facts(kvm_usable=False)),
         None, IMAGE_OK, "kvm", Status.WARN, "/dev/kvm is missing"),
        (dataclasses.replace(
            KVM_HOST, facts=_facts(KVM_HOST, kvm_usable=False, kvm_detail="Permission denied")),
         None, IMAGE_OK, "kvm", Status.WARN, "Permission denied"),
        (dataclasses.replace(PVM_HOST, qemu=_tool("/q", False, error="not found")), None,
         IMAGE_OK, "qemu", Status.FAIL, "/q: not found"),
        (dataclasses.replace(PVM_HOST, qemu=_tool("/q", True, "QEMU emulator version 5.2.0")),
         None, IMAGE_OK, "qemu", Status.WARN, "5.2.0"),
        (dataclasses.replace(PVM_HOST, qemu_caps=QemuCaps(frozenset({"tcg"}), frozenset(),
                                                          frozenset({"q35"}))),
         None, IMAGE_OK, "qemu devices", Status.FAIL, "did not list"),
        (dataclasses.replace(PVM_HOST, qemu_caps=QemuCaps(
            frozenset({"tcg"}), frozenset({"virtio-serial-pci"}), frozenset({"q35"}))),
         None, IMAGE_OK, "qemu devices", Status.FAIL, "missing virtserialport"),
        (PVM_HOST, _cfg(hypervisor={"qemu": {"machine_type": "virt"}}), IMAGE_OK,
         "machine type", Status.FAIL, "virt: QEMU does not offer it"),
        (dataclasses.replace(PVM_HOST, virtiofsd=_tool("/v", False, error="not found")), None,
         IMAGE_OK, "virtiofsd", Status.FAIL, "/v: not found"),
        (PVM_HOST, None, ImageReport("missing", "no guest image in /x/image"), "guest image",
         Status.FAIL, "missing"),
        (PVM_HOST, None, ImageReport("stale", "agent changed"), "guest image", Status.WARN,
         "stale"),
        (PVM_HOST, None, ImageReport("broken", "files differ"), "guest image", Status.FAIL,
         "broken"),
        (PVM_HOST, _cfg(agent={"pykata": {"transport": "vsock"}}), IMAGE_OK, "vhost-vsock",
         Status.FAIL, "missing"),
        (dataclasses.replace(PVM_HOST, euid=1000), None, IMAGE_OK, "privileges", Status.FAIL,
         "needs root"),
        (PVM_HOST, _cfg(hypervisor={"qemu": {"enable_numa": True, "numa_mapping": ["0", "7"]}}),
         IMAGE_OK, "numa", Status.FAIL, "numa_mapping entry '7': host has nodes 0"),
        (PVM_HOST, _cfg(runtime={"state_dir": "/run/" + "x" * 60}), IMAGE_OK, "state dir",
         Status.FAIL, "too long"),
        (PVM_HOST, _cfg(hypervisor={"qemu": {"default_vcpus": 4}}), IMAGE_OK, "vm size",
         Status.FAIL, "host has 2 CPUs"),
        (dataclasses.replace(PVM_HOST, cgroup=""), None, IMAGE_OK, "cgroups", Status.WARN,
         "no cgroup"),
        (PVM_HOST, _cfg(hypervisor={"qemu": {"bogus": 1}}), IMAGE_OK, "configuration",
         Status.WARN, "unknown key hypervisor.qemu.bogus"),
    ],
    ids=["forced-kvm", "no-dev-kvm", "kvm-permission", "no-qemu", "old-qemu", "no-device-list",
         "missing-device", "bad-machine", "no-virtiofsd", "no-image", "stale-image",
         "broken-image", "vsock-without-device", "not-root", "numa-absent-node",
         "long-state-dir", "too-many-vcpus", "no-cgroups", "config-warning"],
)
def test_verdicts(host: HostReport, cfg: Config | None, image: ImageReport, name: str,
                  status: Status, says: str) -> None:
    results = judge_host(host, image, cfg or Config())
    got = next(c for c in results if c.name == name)
    assert got.status is status
    assert says in got.detail
    assert can_run(results) is (status is not Status.FAIL)
    if status is not Status.PASS:
        assert got.hint


def test_device_help_keeps_only_what_pykata_may_use() -> None:
    text = ('Controller/Bridge/Hub devices:\nname "pxb-pcie", bus PCI, desc "PCI Express..."\n'
            'name "virtio-serial-pci", bus PCI, alias "virtio-serial"\n'
            'name "virtio-serial-pci-transitional", bus PCI\n'
            'name "Skylake-Client-x86_64-cpu"\nname "pc-dimm", desc "DIMM memory module"\n')
    assert parse_device_help(text) == {"pxb-pcie", "virtio-serial-pci", "pc-dimm"}


def test_list_help() -> None:
    assert parse_list_help("Accelerators supported in QEMU binary:\ntcg\nkvm\n") == {"tcg", "kvm"}
    assert "q35" in parse_list_help("Supported machines are:\nq35   Standard PC (Q35)\n")


@pytest.mark.parametrize(
    ("mounts", "version"),
    [
        (["/sys/fs/cgroup - cgroup2 cgroup2 rw"], "v2"),
        (["/sys/fs/cgroup - tmpfs tmpfs ro", "/sys/fs/cgroup/unified - cgroup2 cgroup2 rw",
          "/sys/fs/cgroup/cpu - cgroup cgroup rw,cpu"],
         "v1 (hybrid, v2 at /sys/fs/cgroup/unified)"),
        (["/sys/fs/cgroup - tmpfs tmpfs ro", "/sys/fs/cgroup/cpu - cgroup cgroup rw"], "v1"),
        ([], ""),
    ],
    ids=["v2", "hybrid", "v1", "none"],
)
def test_cgroup_version(mounts: list[str], version: str) -> None:
    lines = [f"30 25 0:26 / {m.split(' - ')[0]} rw,nosuid shared:9 - {m.split(' - ')[1]}"
             for m in mounts]
    assert parse_cgroup_mounts("\n".join(lines)) == version


def test_read_numa(tmp_path: Path) -> None:
    (tmp_path / "online").write_text("0-1\n")
    for n, cpus in ((0, "0-3"), (1, "4-7")):
        (tmp_path / f"node{n}").mkdir()
        (tmp_path / f"node{n}" / "cpulist").write_text(cpus + "\n")
        (tmp_path / f"node{n}" / "meminfo").write_text(f"Node {n} MemTotal:  2097152 kB\n")
    assert read_numa(tmp_path) == (NumaNode(0, "0-3", 2048), NumaNode(1, "4-7", 2048))
    (tmp_path / "online").write_text("garbage")
    assert read_numa(tmp_path) == ()


def test_run_tool_never_uses_a_shell(tmp_path: Path) -> None:
    out, why = run_tool(["/bin/echo", "$(touch x); rm -rf /"])
    assert out == "$(touch x); rm -rf /\n" and why == ""
    assert run_tool([str(tmp_path / "missing")]) == (None, "not found")
    assert run_tool(["/bin/false"])[0] is None


def _args(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"config": None, "json": False, "verbose": False,
                                 "boot": False, **kw})


@pytest.fixture
def fake_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check_cli, "read_host_report", lambda cfg: PVM_HOST)
    monkeypatch.setattr(check_cli, "read_image_report", lambda cfg: IMAGE_OK)
    monkeypatch.setattr(env_cli, "read_host_report", lambda cfg: PVM_HOST)
    monkeypatch.setattr(env_cli, "read_image_report", lambda cfg: IMAGE_OK)
    monkeypatch.delenv("PYKATA_CONF_FILE", raising=False)


def test_check_cli_text(fake_host: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_cli.main(_args()) == 0
    out = capsys.readouterr().out
    assert re.search(r"WARN  kvm ", out) and re.search(r"PASS  accelerator +tcg", out)
    assert out.rstrip().endswith("pykata can run on this host.")


def test_check_cli_json_and_failure(fake_host: None, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[hypervisor.qemu]\naccel = "kvm"\n')
    assert check_cli.main(_args(config=str(conf), json=True, verbose=True)) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    accel = next(c for c in doc["checks"] if c["name"] == "accelerator")
    assert accel["status"] == "fail"
    assert doc["host"]["kvm_modules"] == ["kvm", "kvm_pvm"]


def test_env_cli(fake_host: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert env_cli.main(argparse.Namespace(config=None, json=False)) == 0
    doc = tomllib.loads(capsys.readouterr().out)
    assert doc["plan"] == {"accelerator": "tcg", "transport": "virtio-serial",
                           "accelerator_reason": "CPU has no vmx/svm flag: using TCG"}
    assert doc["config"]["hypervisor"]["qemu"]["default_memory"] == 2048
    assert doc["config"]["main_file_from"] in ("packaged default", "system file")
    assert doc["host"]["numa"] == [{"id": 0, "cpus": "0-1", "mem_mib": 5464}]
    assert env_cli.main(argparse.Namespace(config=None, json=True)) == 0
    assert json.loads(capsys.readouterr().out)["image"]["state"] == "current"


def test_check_cli_reports_a_broken_configuration_as_a_fail(
        fake_host: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text("[hypervisor.qemu]\nnuma_mapping = ['x']\n")
    assert check_cli.main(_args(config=str(conf))) == 1
    out = capsys.readouterr().out
    assert "FAIL  configuration" in out and "numa_mapping = ['x']" in out
    assert "PASS  accelerator" in out  # the host is still checked


def test_host_facts_with_topology_are_jsonable() -> None:
    hosts = Path(__file__).resolve().parent.parent / "fixtures" / "hosts"
    facts = dataclasses.replace(PVM_HOST.facts, topology=read_topology(hosts / "two-socket-8gpu"))
    doc = json.loads(json.dumps(check_cli.jsonable(facts)))
    assert doc["topology"]["nodes"][1]["cpus"] == "24-47,72-95"


@pytest.mark.parametrize(("host", "qemu", "status", "detail"), [
    ({}, {}, Status.PASS, "rootfs.img (128 MiB) on virtio-pmem, shared by every VM"),
    ({"image_bytes": 0}, {}, Status.WARN, "off: the built initramfs (/var/lib/pykata/image/"
     "rootfs.img cannot be read)"),
    ({}, {"initrd": "/srv/i.img"}, Status.PASS, "off: the configured initrd"),
    ({}, {"image": "/srv/r.img", "initrd": "/srv/i.img"}, Status.FAIL,
     "set either image or initrd"),
])
def test_the_dax_image_line_says_what_run_will_boot(host: dict[str, Any], qemu: dict[str, Any],
                                                    status: Status, detail: str) -> None:
    c = _verdicts(dataclasses.replace(PVM_HOST, **host),
                  cfg=_cfg(hypervisor={"qemu": qemu}))["dax guest image"]
    assert c.status is status and detail in c.detail, c
