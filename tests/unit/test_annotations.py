"""Per-pod annotations: what they may override, and every way a hostile pod is refused."""

from __future__ import annotations

from typing import Any

import pytest

from pykata.domain.annotations import (
    PREFIX,
    apply_annotations,
    is_normalised_path,
    parse_annotations,
    path_matches,
)
from pykata.domain.config import Config, build_config
from pykata.domain.errors import AnnotationError, SpecError
from pykata.plan.sandbox import SandboxPlan

HV = f"{PREFIX}hypervisor."


def _cfg(**qemu: Any) -> Config:
    return build_config([("admin.toml", {"hypervisor": {"qemu": qemu}})])


ALLOW_ALL_PATHS = _cfg(
    enable_annotations=["path", "kernel", "initrd", "virtio_fs_daemon", "kernel_params",
                        "default_memory", "default_vcpus", "default_max_vcpus"],
    valid_hypervisor_paths=["/usr/bin/qemu-system-*"],
    valid_virtio_fs_daemon_paths=["/usr/lib/qemu/virtiofsd"],
    valid_kernel_paths=["/var/lib/pykata/kernels/*"],
    valid_initrd_paths=["/var/lib/pykata/kernels/*"],
)


def _refused(cfg: Config, annotations: dict[str, str]) -> AnnotationError:
    with pytest.raises(AnnotationError) as err:
        apply_annotations(cfg, annotations)
    return err.value


@pytest.mark.parametrize("key", ["path", "kernel", "initrd", "virtio_fs_daemon",
                                 "kernel_params", "default_memory", "machine_type"])
def test_hypervisor_keys_are_refused_unless_enabled(key: str) -> None:
    err = _refused(Config(), {HV + key: "/usr/bin/qemu-system-x86_64"})
    assert err.refused[0][0] == HV + key
    assert "not enabled" in str(err) and "enable_annotations" in str(err)


def test_enabled_path_outside_the_globs_is_refused() -> None:
    err = _refused(ALLOW_ALL_PATHS, {HV + "path": "/tmp/evil-qemu"})
    assert "matches no glob in hypervisor.qemu.valid_hypervisor_paths" in str(err)


def test_enabled_path_with_an_empty_allowlist_is_refused() -> None:
    cfg = _cfg(enable_annotations=["path"])
    err = _refused(cfg, {HV + "path": "/usr/bin/qemu-system-x86_64"})
    assert "path not allowed: hypervisor.qemu.valid_hypervisor_paths is empty" in str(err)


def test_jailer_path_is_refused_when_only_path_is_allowed() -> None:
    err = _refused(ALLOW_ALL_PATHS, {HV + "jailer_path": "/usr/bin/qemu-system-x86_64"})
    assert "no entry of hypervisor.qemu.enable_annotations" in str(err)
    assert "'jailer_path' as a whole" in str(err)


def test_a_pattern_matching_keys_pykata_lacks_still_refuses_them() -> None:
    cfg = _cfg(enable_annotations=[".*path"], valid_hypervisor_paths=["/usr/bin/*"])
    err = _refused(cfg, {HV + "jailer_path": "/usr/bin/x"})
    assert "no hypervisor key 'jailer_path' may be set by annotation" in str(err)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("/usr/bin/../../tmp/qemu-system-x", "normalised absolute path"),
        ("/usr/bin/qemu-system-x/../../../tmp/q", "normalised absolute path"),
        ("/usr/bin//qemu-system-x", "normalised absolute path"),
        ("/usr/bin/./qemu-system-x", "normalised absolute path"),
        ("usr/bin/qemu-system-x", "normalised absolute path"),
        ("/usr/bin/qemu-system-x/evil", "matches no glob"),  # * stays in one component
        ("", "normalised absolute path"),
    ],
    ids=["dotdot", "dotdot-after-match", "double-slash", "dot", "relative", "star-slash",
         "empty"],
)
def test_path_tricks_are_refused(value: str, why: str) -> None:
    err = _refused(ALLOW_ALL_PATHS, {HV + "path": value})
    assert why in str(err)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("path", "/usr/bin/qemu-system-aarch64", "path"),
        ("virtio_fs_daemon", "/usr/lib/qemu/virtiofsd", "virtio_fs_daemon"),
        ("kernel", "/var/lib/pykata/kernels/vmlinuz-6.1", "kernel"),
        ("initrd", "/var/lib/pykata/kernels/initrd.img", "initrd"),
        ("default_memory", "4096", "default_memory"),
    ],
)
def test_allowed_overrides_apply(key: str, value: str, field: str) -> None:
    cfg = apply_annotations(ALLOW_ALL_PATHS, {HV + key: value})
    got = getattr(cfg.hypervisor, field)
    assert str(got) == value
    assert ALLOW_ALL_PATHS.hypervisor.default_memory == 2048  # pure: the input is unchanged


def test_kernel_params_are_appended_as_in_kata() -> None:
    cfg = _cfg(enable_annotations=["kernel_params"], kernel_params="quiet")
    out = apply_annotations(cfg, {HV + "kernel_params": "debug loglevel=7"})
    assert out.hypervisor.kernel_params == "quiet debug loglevel=7"


def test_anchoring_is_whole_name_for_regex_entries() -> None:
    cfg = _cfg(enable_annotations=["default_.*"])
    out = apply_annotations(cfg, {HV + "default_memory": "1024", HV + "default_vcpus": "2"})
    assert (out.hypervisor.default_memory, out.hypervisor.default_vcpus) == (1024, 2.0)
    assert "not enabled" in str(_refused(cfg, {HV + "memory_slots": "4"}))
    cfg = _cfg(enable_annotations=["memory"])
    assert "not enabled" in str(_refused(cfg, {HV + "default_memory": "1024"}))


@pytest.mark.parametrize(
    ("annotations", "why"),
    [
        ({HV + "default_memory": "-5"}, "must be at least 64"),
        ({HV + "default_memory": "8"}, "must be at least 64"),
        ({HV + "default_memory": "2G"}, "expected an integer"),
        ({HV + "default_memory": "1" * 40}, "expected an integer"),
        ({HV + "default_vcpus": "nan"}, "expected a number"),
        ({HV + "default_vcpus": "0"}, "must be more than 0"),
        ({HV + "default_max_vcpus": "1", HV + "default_vcpus": "2"}, "default_maxvcpus = 1"),
        ({f"{PREFIX}runtime.enable_vcpus_pinning": "yes"}, "expected true or false"),
        ({f"{PREFIX}runtime.state_dir": "/tmp/x"}, "no runtime key 'state_dir'"),
        ({f"{PREFIX}image.dir": "/tmp/x"}, "not a pykata annotation"),
        ({f"{PREFIX}hypervisor": "x"}, "not a pykata annotation"),
        ({f"{PREFIX}agent.transport": "vsock"}, "no agent key 'transport'"),
        ({f"{PREFIX}agent.dial_timeout": "1e9"}, "must be at most 600"),
        ({HV + "kernel_params": "a" * 5000}, "longer than"),
        ({HV + "kernel_params": "a\0b"}, "NUL"),
    ],
    ids=["negative", "too-small", "suffix", "huge", "nan", "zero-vcpus", "above-max-vcpus",
         "bool", "state-dir", "image-dir", "no-key", "agent-transport", "huge-timeout",
         "long-value", "nul"],
)
def test_bad_values_are_refused(annotations: dict[str, str], why: str) -> None:
    cfg = _cfg(enable_annotations=[".*"])
    assert why in str(_refused(cfg, annotations))


@pytest.mark.parametrize("key", ["enable_annotations", "valid_hypervisor_paths",
                                 "valid_virtio_fs_daemon_paths", "valid_kernel_paths"])
def test_the_security_keys_are_never_annotatable(key: str) -> None:
    cfg = _cfg(enable_annotations=[".*"])
    err = _refused(cfg, {HV + key: '["/tmp/*"]'})
    assert f"no hypervisor key '{key}' may be set by annotation" in str(err)


def test_one_refusal_refuses_all_and_names_each() -> None:
    cfg = _cfg(enable_annotations=["default_memory"])
    err = _refused(cfg, {HV + "default_memory": "1024", HV + "path": "/x", HV + "kernel": "/y",
                         f"{PREFIX}runtime.sandbox_cgroup_only": "true"})
    assert [name for name, _, _ in err.refused] == [HV + "kernel", HV + "path"]
    assert str(err).startswith("refused annotations ")


def test_runtime_and_agent_keys_need_no_allowlist() -> None:
    out = apply_annotations(Config(), {f"{PREFIX}runtime.enable_vcpus_pinning": "true",
                                       f"{PREFIX}runtime.sandbox_cgroup_only": "1",
                                       f"{PREFIX}runtime.create_container_timeout": "30",
                                       f"{PREFIX}agent.dial_timeout": "12.5"})
    assert out.runtime.enable_vcpus_pinning and out.runtime.sandbox_cgroup_only
    assert out.runtime.create_container_timeout == 30
    assert out.agent.dial_timeout == 12.5


def test_other_annotations_are_not_configuration() -> None:
    cfg = Config()
    annotations = {"io.kubernetes.cri.container-type": "sandbox",
                   "io.katacontainers.pkg.oci.container_type": "pod_sandbox",
                   "io.katacontainers.config_path": "/tmp/x"}
    assert apply_annotations(cfg, annotations) is cfg


def test_parse_annotations() -> None:
    assert parse_annotations({}, "c.json") == {}
    assert parse_annotations({"annotations": {"a": "b"}}, "c.json") == {"a": "b"}
    bad: object
    for bad in ([], {"a": 1}, "x"):
        with pytest.raises(SpecError, match="c.json: annotations"):
            parse_annotations({"annotations": bad}, "c.json")


@pytest.mark.parametrize(
    ("glob", "path", "match"),
    [
        ("/usr/bin/qemu-*", "/usr/bin/qemu-system-x86_64", True),
        ("/usr/bin/qemu-*", "/usr/bin/qemu-x/y", False),
        ("/usr/*/qemu", "/usr/bin/qemu", True),
        ("/usr/*/qemu", "/usr/a/b/qemu", False),
        ("/opt/qemu?", "/opt/qemu7", True),
        ("/opt/qemu[0-9]", "/opt/qemux", False),
        ("/opt/qemu", "/opt/qemu/", False),
    ],
)
def test_path_matches_like_go_filepath_match(glob: str, path: str, match: bool) -> None:
    assert path_matches(glob, path) is match


@pytest.mark.parametrize(
    ("path", "ok"),
    [("/a/b", True), ("/", False), ("/a/", False), ("/a/../b", False), ("a", False),
     ("/a//b", False), ("/a/./b", False), ("/a/..b", True)],
)
def test_is_normalised_path(path: str, ok: bool) -> None:
    assert is_normalised_path(path) is ok


def _bundle(tmp_path: Any, annotations: dict[str, str]) -> Any:
    import json

    (tmp_path / "rootfs").mkdir()
    doc = {"process": {"args": ["true"], "cwd": "/"}, "root": {"path": "rootfs"},
           "annotations": annotations}
    (tmp_path / "config.json").write_text(json.dumps(doc))
    return tmp_path


def test_pykata_run_refuses_before_anything_starts(tmp_path: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from pykata.cli import run

    def must_not_run(*args: object) -> None:
        raise AssertionError("the sandbox must not start")

    monkeypatch.setattr(run, "run_container", must_not_run)
    monkeypatch.setattr(run, "sweep", must_not_run)
    monkeypatch.delenv("PYKATA_CONF_FILE", raising=False)
    args = argparse.Namespace(config=None, bundle=str(_bundle(tmp_path, {HV + "path": "/x"})),
                              rootfs=None, cmd=[], interactive=False, annotation=[],
                              dry_run=False)
    with pytest.raises(AnnotationError, match="io.katacontainers.config.hypervisor.path"):
        run.main(args)


def test_pykata_run_applies_allowed_annotations(tmp_path: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from pykata.cli import run

    seen: list[SandboxPlan] = []

    async def fake_run(plan: SandboxPlan, *args: object, **kwargs: object) -> int:
        seen.append(plan)
        return 0

    conf = tmp_path / "c.toml"
    conf.write_text('[hypervisor.qemu]\nenable_annotations = ["default_memory"]\n')
    monkeypatch.setattr(run, "run_container", fake_run)
    monkeypatch.setattr(run, "sweep", lambda root: [])
    bundle = _bundle(tmp_path, {HV + "default_memory": "512", "other": "x"})
    args = argparse.Namespace(config=str(conf), bundle=str(bundle), rootfs=None, cmd=[],
                              interactive=False, annotation=[], dry_run=False)
    assert run.main(args) == 0
    assert seen[0].config.hypervisor.default_memory == 512
    assert seen[0].vm.sizing.memory_mib == 512


def test_kata_go_pinning_annotation_is_accepted() -> None:
    out = apply_annotations(Config(), {"io.katacontainers.enable_vcpus_pinning": "true"})
    assert out.runtime.enable_vcpus_pinning
