from __future__ import annotations

import importlib.resources
from typing import Any

import pytest

from pykata.domain.config import Config, build_config, parse_toml
from pykata.domain.errors import SpecError
from pykata.domain.host import HostFacts
from pykata.domain.limits import Limits
from pykata.plan.sizing import (
    limits_from_annotations,
    limits_from_spec,
    plan_resize,
    plan_sizing,
    workload_limits,
)

GiB = 1 << 30
MiB = 1 << 20
X86 = frozenset({"pc-dimm", "virtio-mem-pci", "virtio-net-pci"})
S390 = frozenset({"virtio-net-ccw"})


def _cfg(runtime: dict[str, Any] | None = None, **qemu: Any) -> Config:
    text = importlib.resources.files("pykata.domain").joinpath("defaults.toml").read_text()
    return build_config([("defaults", parse_toml(text, "d")),
                         ("test", {"hypervisor": {"qemu": qemu}, "runtime": runtime or {}})])


def _facts(cpus: int = 8, mem: int = 16384) -> HostFacts:
    return HostFacts(frozenset(), False, "", False, online_cpus=cpus, mem_total_mib=mem)


def _spec(cpu: dict[str, Any] | None = None, memory: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if cpu is not None:
        res["cpu"] = cpu
    if memory is not None:
        res["memory"] = memory
    return {"linux": {"resources": res}}


@pytest.mark.parametrize(
    ("cpu", "memory", "vcpus", "mib"),
    [
        (None, None, 0.0, 0),
        ({"quota": 150000, "period": 100000}, None, 1.5, 0),
        ({"quota": 50000}, None, 0.5, 0),                       # default period
        ({"quota": -1, "period": 100000}, None, 0.0, 0),        # -1: no limit
        ({"quota": -1, "cpus": "0-2"}, None, 3.0, 0),           # no quota: cpuset size
        ({"quota": 200000, "period": 100000, "cpus": "0"}, None, 2.0, 0),  # quota wins
        ({"shares": 2048}, None, 2.0, 0),                        # shares only without quota
        ({"shares": 2}, None, 1.0, 0),
        ({"shares": 4096, "quota": 100000}, None, 1.0, 0),
        ({"cpus": "0,4", "shares": 8192}, None, 2.0, 0),        # cpuset before shares
        (None, {"limit": 512 * MiB}, 0.0, 512),
        (None, {"limit": 512 * MiB + 4095}, 0.0, 512),          # bytes >> 20
        (None, {"limit": -1}, 0.0, 0),
        ({"quota": 300000, "period": 100000}, {"limit": GiB}, 3.0, 1024),
    ],
    ids=["none", "quota", "quota-default-period", "quota-unlimited", "cpuset", "quota-over-cpuset",
         "shares", "shares-tiny", "shares-ignored-with-quota", "cpuset-over-shares", "memory",
         "memory-rounds-down", "memory-unlimited", "both"],
)
def test_limits_from_spec(cpu: dict[str, Any] | None, memory: dict[str, Any] | None,
                          vcpus: float, mib: int) -> None:
    got = limits_from_spec(_spec(cpu, memory), "config.json")
    assert (got.vcpus, got.memory_mib) == (vcpus, mib)
    assert bool(got.reasons) == bool(vcpus or mib)


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (_spec({"quota": 100000, "period": 0}), r"cpu\.period: must be more than 0, got 0"),
        (_spec({"quota": 100000, "period": -5}), r"cpu\.period: must be more than 0, got -5"),
        (_spec({"quota": -7}), r"cpu\.quota: must be more than 0, or -1 .*got -7"),
        (_spec({"quota": "100000"}), r"cpu\.quota: expected an integer, got '100000'"),
        (_spec({"quota": True}), r"cpu\.quota: expected an integer, got True"),
        (_spec({"shares": -1}), r"cpu\.shares: must not be negative, got -1"),
        (_spec({"cpus": "3-1"}), r"cpu\.cpus: '3-1'"),
        (_spec({"cpus": 3}), r"cpu\.cpus: expected a CPU list"),
        (_spec(None, {"limit": 8 * MiB}), r"memory\.limit: 8388608 bytes \(8 MiB\) is below"),
        (_spec(None, {"limit": -2}), r"memory\.limit: must be more than 0, or -1.*got -2"),
        (_spec(None, {"limit": 1.5}), r"memory\.limit: expected an integer, got 1\.5"),
        ({"linux": {"resources": []}}, r"linux\.resources: must be an object"),
        ({"linux": {"resources": {"cpu": 4}}}, r"linux\.resources\.cpu: must be an object"),
    ],
    ids=["period-zero", "period-negative", "quota-negative", "quota-string", "quota-bool",
         "shares-negative", "cpuset-bad", "cpuset-type", "memory-too-small",
         "memory-negative", "memory-float", "resources-type", "cpu-type"],
)
def test_bad_spec_limits_name_field_and_value(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(SpecError, match=match) as info:
        limits_from_spec(doc, "b/config.json")
    assert str(info.value).startswith("b/config.json: linux.resources")


A = "io.kubernetes.cri.sandbox-"


@pytest.mark.parametrize(
    ("annotations", "want"),
    [
        ({}, None),
        ({"other": "1"}, None),
        ({A + "cpu-quota": "200000", A + "cpu-period": "100000"}, (2.0, 0)),
        ({A + "cpu-quota": "0", A + "cpu-period": "100000", A + "cpu-shares": "1536"},
         (2.0, 0)),
        ({A + "memory": str(GiB)}, (0.0, 1024)),
        ({A + "memory": "0", A + "cpu-quota": "-1"}, (0.0, 0)),
    ],
    ids=["none", "unrelated", "quota", "shares-without-quota", "memory", "zero-means-none"],
)
def test_limits_from_annotations(annotations: dict[str, str],
                                 want: tuple[float, int] | None) -> None:
    got = limits_from_annotations(annotations, "config.json")
    assert (None if got is None else (got.vcpus, got.memory_mib)) == want


@pytest.mark.parametrize(
    ("annotations", "match"),
    [
        ({A + "cpu-quota": "lots"}, r"sandbox-cpu-quota: expected an integer, got 'lots'"),
        ({A + "cpu-quota": "1e5"}, r"sandbox-cpu-quota: expected an integer, got '1e5'"),
        ({A + "cpu-quota": "--5"}, r"sandbox-cpu-quota: expected an integer, got '--5'"),
        ({A + "memory": "\u00b2"}, r"sandbox-memory: expected an integer, got '\u00b2'"),
        ({A + "cpu-period": "0", A + "cpu-quota": "1"}, r"sandbox-cpu-period: .*got 0"),
        ({A + "memory": "1Gi"}, r"sandbox-memory: expected an integer, got '1Gi'"),
        ({A + "memory": "1024"}, r"sandbox-memory: 1024 bytes \(0 MiB\) is below"),
    ],
    ids=["quota-word", "quota-float", "quota-double-minus", "memory-superscript", "period-zero",
         "memory-suffix", "memory-tiny"],
)
def test_bad_annotations_name_field_and_value(annotations: dict[str, str], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        limits_from_annotations(annotations, "config.json")


# (config, runtime, workload, devices, host cpus/mem) -> the plan's numbers
@pytest.mark.parametrize(
    ("qemu", "runtime", "workload", "devices", "want"),
    [
        # dynamic, no limits: the defaults, headroom up to the host
        ({}, {}, Limits(), X86, (1, 8, 2048, 16384, False, "pc-dimm", True)),
        # dynamic, known workload: booted at default + workload
        ({}, {}, Limits(1.5, 512), X86, (3, 8, 2560, 16384, False, "pc-dimm", True)),
        ({"default_vcpus": 0.5}, {}, Limits(0.5, 0), X86,
         (1, 8, 2048, 16384, False, "pc-dimm", True)),
        ({"enable_virtio_mem": True}, {}, Limits(), X86,
         (1, 8, 2048, 16384, False, "virtio-mem", True)),
        ({"default_maxvcpus": 4, "default_maxmemory": 4096}, {}, Limits(), X86,
         (1, 4, 2048, 4096, False, "pc-dimm", True)),
        ({"default_maxmemory": 2048}, {}, Limits(), X86,
         (1, 8, 2048, 2048, False, "none", True)),
        # static: overhead + workload; the defaults where the workload sets no limit
        ({}, {"static_sandbox_resource_mgmt": True}, Limits(2, 1024), X86,
         (3, 3, 1056, 1056, True, "none", False)),
        ({}, {"static_sandbox_resource_mgmt": True}, Limits(), X86,
         (1, 1, 2048, 2048, True, "none", False)),
        ({}, {"static_sandbox_resource_mgmt": True}, Limits(0, 64), X86,
         (1, 1, 256, 256, True, "none", False)),   # raised to the guest minimum
        # no memory hotplug device: static, with a reason
        ({}, {}, Limits(1, 512), S390, (2, 2, 544, 544, True, "none", False)),
    ],
    ids=["defaults", "workload", "fractions-sum", "virtio-mem", "maxima", "no-memory-room",
         "static", "static-no-limits", "static-minimum", "no-hotplug-device"],
)
def test_plan_sizing(qemu: dict[str, Any], runtime: dict[str, Any], workload: Limits,
                     devices: frozenset[str], want: tuple[Any, ...]) -> None:
    p = plan_sizing(_cfg(runtime, **qemu), _facts(), devices, workload)
    assert (p.vcpus, p.max_vcpus, p.memory_mib, p.max_memory_mib, p.static,
            p.memory_hotplug, p.cpu_hotplug) == want
    assert p.warnings == ()
    assert any(r.startswith("vcpus ") for r in p.reasons)


def test_no_memory_hotplug_device_says_why() -> None:
    p = plan_sizing(_cfg(path="/usr/bin/qemu-system-s390x"), _facts(), S390, Limits())
    assert p.static
    assert "static: /usr/bin/qemu-system-s390x offers no memory hotplug device (pc-dimm)" \
        in p.reasons


def test_not_resizable_is_static_without_headroom() -> None:
    p = plan_sizing(_cfg(), _facts(), frozenset({"pc-dimm"}), Limits(), resizable=False)
    assert p.static
    assert (p.max_vcpus, p.max_memory_mib) == (p.vcpus, p.memory_mib)
    assert (p.memory_hotplug, p.cpu_hotplug, p.memory_slots) == ("none", False, 0)
    assert any("one container for the VM's whole life" in r for r in p.reasons)


def test_not_resizable_keeps_the_formula() -> None:
    work = Limits(vcpus=2, memory_mib=512)
    dynamic = plan_sizing(_cfg(), _facts(), frozenset({"pc-dimm"}), work)
    run = plan_sizing(_cfg(), _facts(), frozenset(), work, resizable=False)
    assert (run.vcpus, run.memory_mib) == (dynamic.vcpus, dynamic.memory_mib)
    static_cfg = _cfg(runtime={"static_sandbox_resource_mgmt": True})
    static = plan_sizing(static_cfg, _facts(), frozenset({"pc-dimm"}), work)
    static_run = plan_sizing(static_cfg, _facts(), frozenset(), work, resizable=False)
    assert (static_run.vcpus, static_run.memory_mib) == (static.vcpus, static.memory_mib)


@pytest.mark.parametrize(("accel", "unplug"), [("kvm", True), ("tcg", False)])
def test_vcpus_grow_only_under_tcg(accel: str, unplug: bool) -> None:
    p = plan_sizing(_cfg(), _facts(), frozenset({"pc-dimm"}), Limits(), accel=accel)
    assert p.cpu_hotplug and p.cpu_unplug is unplug
    assert any("vcpus grow only" in r for r in p.reasons) is not unplug


def test_virtio_mem_missing_falls_back_to_pc_dimm_with_reason() -> None:
    p = plan_sizing(_cfg(enable_virtio_mem=True), _facts(), frozenset({"pc-dimm"}), Limits())
    assert p.memory_hotplug == "pc-dimm"
    assert any("but not virtio-mem-pci" in r for r in p.reasons)


@pytest.mark.parametrize(
    ("qemu", "workload", "want", "warning"),
    [
        ({}, Limits(12, 0), (2, 2, 2048, 16384), "vcpus 13 capped to the host's 2 CPUs"),
        ({}, Limits(0, 20000), (1, 2, 16384, 16384),
         "memory 22048 MiB capped to the host's 16384 MiB"),
        ({"default_maxvcpus": 16}, Limits(), (1, 2, 2048, 16384),
         "default_maxvcpus 16 capped to the host's 2 CPUs"),
        ({"default_maxmemory": 65536}, Limits(), (1, 2, 2048, 16384),
         "default_maxmemory 65536 MiB capped to the host's 16384 MiB"),
        ({"default_maxvcpus": 1}, Limits(1, 0), (1, 1, 2048, 16384),
         "vcpus 2 capped to max_vcpus 1"),
        ({"default_maxmemory": 3000}, Limits(0, 2048), (1, 2, 3000, 3000),
         "memory 4096 MiB capped to max_memory 3000 MiB"),
    ],
    ids=["vcpus", "memory", "maxvcpus", "maxmemory", "over-maxvcpus", "over-maxmemory"],
)
def test_host_caps_warn(qemu: dict[str, Any], workload: Limits, want: tuple[int, ...],
                        warning: str) -> None:
    p = plan_sizing(_cfg(**qemu), _facts(cpus=2), X86, workload)
    assert (p.vcpus, p.max_vcpus, p.memory_mib, p.max_memory_mib) == want
    assert p.warnings == (warning,)


@pytest.mark.parametrize(("virtio_mem", "host_mib"), [(False, 24103), (True, 24103),
                                                     (True, 2100)])
def test_hotplug_room_is_whole_blocks(virtio_mem: bool, host_mib: int) -> None:
    p = plan_sizing(_cfg(enable_virtio_mem=virtio_mem), _facts(mem=host_mib), X86, Limits())
    assert (p.max_memory_mib - p.memory_mib) % 128 == 0
    assert p.memory_hotplug == ("none" if host_mib < 2048 + 128 else
                                "virtio-mem" if virtio_mem else "pc-dimm")


def test_max_vcpus_capped_at_240() -> None:
    assert plan_sizing(_cfg(), _facts(cpus=512), X86, Limits()).max_vcpus == 240


@pytest.mark.parametrize(
    ("qemu", "containers", "want"),
    [
        ({}, [], (1, 2048)),
        ({}, [Limits(0.5, 256), Limits(0.5, 256)], (2, 2560)),
        ({}, [Limits(100, 0)], (8, 2048)),                       # capped to max_vcpus
        ({"default_maxmemory": 3000}, [Limits(0, 4096)], (1, 2944)),  # max: whole blocks
    ],
    ids=["empty", "sum", "cpu-cap", "memory-cap"],
)
def test_plan_resize(qemu: dict[str, Any], containers: list[Limits],
                     want: tuple[int, int]) -> None:
    current = plan_sizing(_cfg(**qemu), _facts(), X86, Limits())
    got = plan_resize(current, containers)
    assert (got.vcpus, got.memory_mib) == want


@pytest.mark.parametrize(("virtio_mem", "want"), [(False, 2560), (True, 2048)],
                         ids=["pc-dimm-grows-only", "virtio-mem-shrinks"])
def test_resize_shrink(virtio_mem: bool, want: int) -> None:
    booted = plan_sizing(_cfg(enable_virtio_mem=virtio_mem), _facts(), X86, Limits(1, 512))
    assert plan_resize(booted, []).memory_mib == want


def test_static_never_resizes() -> None:
    p = plan_sizing(_cfg({"static_sandbox_resource_mgmt": True}), _facts(), X86, Limits(1, 512))
    got = plan_resize(p, [Limits(4, 4096)])
    assert (got.vcpus, got.memory_mib) == (p.vcpus, p.memory_mib)


@pytest.mark.parametrize(
    ("doc", "want"),
    [
        ({}, (0.0, 0)),
        (_spec({"quota": 200000, "period": 100000}, {"limit": GiB}), (2.0, 1024)),
        ({**_spec({"quota": 200000}), "annotations": {A + "memory": str(GiB), "x": "y"}},
         (0.0, 1024)),                                    # the pod's limits win
        ({**_spec({"quota": 200000}), "annotations": {"x": "y"}}, (2.0, 0)),
    ],
    ids=["nothing", "container", "sandbox-annotations", "other-annotations"],
)
def test_workload_limits(doc: dict[str, Any], want: tuple[float, int]) -> None:
    got = workload_limits(doc, "config.json")
    assert (got.vcpus, got.memory_mib) == want
