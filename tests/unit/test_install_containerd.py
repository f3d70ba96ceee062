"""`pykata install containerd`: the golden snippet, the main config's `imports` edit, what the
drop-in carries (containerd 1.6 takes a plugin's section whole from the last file), and
--write into a temporary directory, twice. Where containerd is installed, its own
`config dump` checks the result."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pykata.cli.main import EXIT_PYKATA_ERROR, main
from pykata.domain.errors import InstallError
from pykata.domain.toml_text import render, top_level
from pykata.host import config_files
from pykata.plan.containerd_config import (
    CRI,
    RUNC,
    covers,
    cri_section,
    load_order,
    plan_dropin,
    plan_main_config,
    render_snippet,
    runtime_entry,
)

MAIN = "/etc/containerd/config.toml"
DROPIN = "/etc/containerd/conf.d/pykata.toml"
ENTRY = '"/etc/containerd/conf.d/*.toml"'
CONF = "/etc/pykata/configuration.toml"

GOLDEN = """\
# pykata as a runtime of containerd 1.6's CRI plugin (Kubernetes), from
# `pykata install containerd`. containerd merges the files its config's `imports` name
# into it: `pykata install containerd --write` writes this to
# /etc/containerd/conf.d/pykata.toml as such a file (with what containerd 1.6
# needs beside it: see there) and imports it. Or paste it into
# /etc/containerd/config.toml below its other tables. Restart containerd after either.
#
# privileged_without_host_devices: a privileged pod's VM gets none of the host's devices.

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.pykata]
runtime_type = "io.containerd.pykata.v2"
pod_annotations = ["io.katacontainers.*"]
container_annotations = ["io.katacontainers.*"]
privileged_without_host_devices = true

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.pykata.options]
ConfigPath = "/etc/pykata/configuration.toml"

# containerd 1.6 forgets its built-in runc runtime once a config names any runtime: where
# the config has no [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc] table, add
# this one too (--write does):
#
# [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
# runtime_type = "io.containerd.runc.v2"

# Kubernetes: apply this RuntimeClass (kubectl apply -f), then set
# `runtimeClassName: pykata` in a pod's spec. `pykata plan --pod POD.yaml` prints the
# VM's share for an optional `overhead.podFixed`.
#
# apiVersion: node.k8s.io/v1
# kind: RuntimeClass
# metadata:
#   name: pykata
# handler: pykata
"""

# Debian 12's /etc/containerd/config.toml, as the containerd package ships it.
DEBIAN = """\
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""
DEBIAN_IMPORTING = DEBIAN.replace("version = 2\n", f"version = 2\nimports = [{ENTRY}]\n")


def _pykata(doc: dict[str, Any]) -> Any:
    return doc["plugins"][CRI]["containerd"]["runtimes"]["pykata"]


# -- the snippet -----------------------------------------------------------------------------

def test_snippet_golden() -> None:
    assert render_snippet(CONF, MAIN, DROPIN) == GOLDEN


def test_snippet_keys_are_where_containerd_reads_them() -> None:
    doc = tomllib.loads(GOLDEN)
    assert list(doc) == ["plugins"]  # no top-level keys: it can follow any config's tables
    assert _pykata(doc) == {
        "runtime_type": "io.containerd.pykata.v2",
        "pod_annotations": ["io.katacontainers.*"],
        "container_annotations": ["io.katacontainers.*"],
        "privileged_without_host_devices": True,
        "options": {"ConfigPath": CONF},
    }
    pasted = tomllib.loads(DEBIAN + "\n" + GOLDEN)
    assert pasted["plugins"][CRI]["cni"]["bin_dir"] == "/usr/lib/cni"
    assert _pykata(pasted) == _pykata(doc)


def test_snippet_quotes_the_config_path() -> None:
    odd = '/etc/pykata/a "b" \\c\tä.toml'
    doc = tomllib.loads(render_snippet(odd, MAIN, DROPIN))
    assert _pykata(doc)["options"]["ConfigPath"] == odd


# -- the main config's imports ---------------------------------------------------------------

MAIN_CASES = {
    "no-file": (None, f"version = 2\nimports = [{ENTRY}]\n"),
    "no-imports": (DEBIAN, DEBIAN_IMPORTING),
    "covered-by-glob": (DEBIAN_IMPORTING, None),
    "covered-by-path": ('version = 2\nimports = ["/etc/containerd/conf.d/pykata.toml"]\n', None),
    "covered-relative": ('version = 2\nimports = ["conf.d/pykata.toml"]\n', None),
    "covered-other-glob": ('version = 2\nimports = ["/etc/containerd/*/*"]\n', None),
    "other-imports": (
        'version = 2\nimports = ["/etc/containerd/other.toml"]\n[grpc]\n',
        f'version = 2\nimports = ["/etc/containerd/other.toml", {ENTRY}]\n[grpc]\n'),
    "empty-imports": ("version = 2\nimports = []\n", f"version = 2\nimports = [{ENTRY}]\n"),
    "multi-line-imports": (
        'version = 2\nimports = [\n  "/a/*.toml",  # a [b]\n  # "/c.toml",\n]\n[x]\n',
        f'version = 2\nimports = [\n  "/a/*.toml", {ENTRY}  # a [b]\n  # "/c.toml",\n]\n[x]\n'),
    "comments-and-tables": (
        '# containerd\n# (site config)\n\nversion = 2\nroot = "/var/lib/containerd"\n\n'
        '# the socket\n[grpc]\n  address = "/run/containerd/containerd.sock"\n',
        f'# containerd\n# (site config)\n\nversion = 2\nroot = "/var/lib/containerd"\n'
        f'imports = [{ENTRY}]\n\n# the socket\n[grpc]\n  address = "/run/containerd/'
        'containerd.sock"\n'),
    "multi-line-string": (
        "version = 2\nstate = '''\n[not.a.table]\n'''\n[grpc]\n",
        f"version = 2\nstate = '''\n[not.a.table]\n'''\nimports = [{ENTRY}]\n[grpc]\n"),
    "empty-file": ("# nothing yet\n", f"version = 2\nimports = [{ENTRY}]\n# nothing yet\n"),
    "no-final-newline": ("version = 2", f"version = 2\nimports = [{ENTRY}]\n"),
    "crlf": ("version = 2\r\n[grpc]\r\n", f"version = 2\r\nimports = [{ENTRY}]\r\n[grpc]\r\n"),
}


@pytest.mark.parametrize(("before", "after"), MAIN_CASES.values(), ids=MAIN_CASES.keys())
def test_plan_main_config(before: str | None, after: str | None) -> None:
    plan = plan_main_config(MAIN, before, DROPIN)
    assert plan.text == after
    assert plan.created == (before is None)
    if after is not None:
        doc = tomllib.loads(after)
        assert doc["imports"][-1] == "/etc/containerd/conf.d/*.toml"
        if before is not None:  # everything else as it was
            old = tomllib.loads(before) or {"version": 2}
            assert doc == {**old, "imports": [*old.get("imports", []), doc["imports"][-1]]}
        assert plan.imports == tuple(doc["imports"])


MAIN_ERRORS = {
    "unparseable": ("version = 2\n[plugins\n", "not valid TOML"),
    "version-1": ('[plugins.cri]\nsandbox_image = "pause"\n', "version 1"),
    "version-3": ("version = 3\n", "version = 3"),
    "imports-not-strings": ("version = 2\nimports = [1]\n", "array of strings"),
}


@pytest.mark.parametrize(("before", "why"), MAIN_ERRORS.values(), ids=MAIN_ERRORS.keys())
def test_plan_main_config_refuses(before: str, why: str) -> None:
    with pytest.raises(InstallError, match=why) as err:
        plan_main_config(MAIN, before, DROPIN)
    assert str(err.value).startswith(f"{MAIN}: ")


@pytest.mark.parametrize(("entry", "expected"), [
    ("/etc/containerd/conf.d/*.toml", True),
    ("/etc/containerd/conf.d/p*", True),
    ("/etc/containerd/conf.d/[^x]*.toml", True),       # Go's negated class
    ("/etc/containerd/conf.d/[^x]ykata.toml", False),  # no *: a path, not a glob
    ("/etc/containerd/*.toml", False),                 # * stops at /
    ("/etc/containerd/conf.d/*.conf", False),
    ("conf.d/*.toml", False),                          # containerd's cwd decides
    ("conf.d/pykata.toml", True),                      # relative to the main config
    ("/etc/containerd/conf.d/../conf.d/pykata.toml", True),
])
def test_covers(entry: str, expected: bool) -> None:
    assert covers(entry, MAIN, DROPIN) is expected


def test_load_order() -> None:
    imports = ["/e/a.toml", "/e/conf.d/*.toml", "b.toml", "/e/a.toml"]
    matches = {"/e/conf.d/*.toml": ["/e/conf.d/10-x.toml", "/e/conf.d/zz.toml"]}
    assert load_order("/e/config.toml", imports, "/e/conf.d/pykata.toml", matches) == [
        "/e/config.toml", "/e/a.toml", "/e/conf.d/10-x.toml", "/e/conf.d/pykata.toml",
        "/e/conf.d/zz.toml", "/e/b.toml"]


# -- the drop-in -----------------------------------------------------------------------------

def _dropin_doc(loaded: list[tuple[str, str | None]]) -> tuple[Any, str | None]:
    plan = plan_dropin(CONF, MAIN, DROPIN, loaded)
    return tomllib.loads(plan.text)["plugins"][CRI], plan.carried_from


def test_dropin_alone_names_runc_too() -> None:
    section, source = _dropin_doc([(MAIN, "version = 2\n"), (DROPIN, None)])
    assert source is None
    assert section == {"containerd": {"runtimes": {"runc": RUNC,
                                                   "pykata": runtime_entry(CONF)}}}


DROPIN_CASES: dict[str, tuple[list[tuple[str, str | None]], str | None, Any]] = {
    "debian": ([(MAIN, DEBIAN_IMPORTING), (DROPIN, None)], MAIN, {
        "cni": {"bin_dir": "/usr/lib/cni", "conf_dir": "/etc/cni/net.d"},
        "containerd": {"runtimes": {"runc": RUNC, "pykata": runtime_entry(CONF)}}}),
    "own-runc-kept": (
        [(MAIN, f'version = 2\n[plugins."{CRI}".containerd.runtimes.runc.options]\n'
                "SystemdCgroup = true\n"), (DROPIN, None)], MAIN,
        {"containerd": {"runtimes": {"runc": {"options": {"SystemdCgroup": True}},
                                     "pykata": runtime_entry(CONF)}}}),
    "other-default-runtime": (
        [(MAIN, f'version = 2\n[plugins."{CRI}".containerd]\ndefault_runtime_name = "crun"\n'
                f'[plugins."{CRI}".containerd.runtimes.crun]\nruntime_type = "c"\n'),
         (DROPIN, None)], MAIN,
        {"containerd": {"default_runtime_name": "crun", "runtimes": {
            "crun": {"runtime_type": "c"}, "pykata": runtime_entry(CONF)}}}),
    "last-earlier-file-wins": (
        [(MAIN, DEBIAN_IMPORTING),
         ("/etc/containerd/conf.d/10-cni.toml", f'[plugins."{CRI}"]\nsandbox_image = "p"\n'),
         (DROPIN, None), ("/etc/containerd/conf.d/zz.toml", "[plugins.other]\n")],
        "/etc/containerd/conf.d/10-cni.toml",
        {"sandbox_image": "p",
         "containerd": {"runtimes": {"runc": RUNC, "pykata": runtime_entry(CONF)}}}),
    "empty-section-counts": (
        [(MAIN, DEBIAN_IMPORTING), ("/etc/containerd/conf.d/0.toml", f'[plugins."{CRI}"]\n'),
         (DROPIN, None)], "/etc/containerd/conf.d/0.toml", cri_section(CONF)),
    "stale-own-file-ignored": (
        [(MAIN, "version = 2\n"), (DROPIN, f'[plugins."{CRI}"]\nstale = 1\n')], None,
        cri_section(CONF)),
}


@pytest.mark.parametrize(("loaded", "source", "section"), DROPIN_CASES.values(),
                         ids=DROPIN_CASES.keys())
def test_plan_dropin(loaded: list[tuple[str, str | None]], source: str | None,
                     section: Any) -> None:
    assert _dropin_doc(loaded) == (section, source)


def test_dropin_refuses_a_later_cri_section() -> None:
    later = "/etc/containerd/conf.d/zz-nvidia.toml"
    loaded = [(MAIN, DEBIAN_IMPORTING), (DROPIN, None),
              (later, f'[plugins."{CRI}".containerd]\ndefault_runtime_name = "nvidia"\n')]
    with pytest.raises(InstallError, match="after .*pykata.toml") as err:
        plan_dropin(CONF, MAIN, DROPIN, loaded)
    assert str(err.value).startswith(later)


def test_dropin_carries_any_toml_value() -> None:
    odd: dict[str, Any] = {
        "quoted key": 'a "b"\n\\c\x7f', "empty": {}, "when": datetime.date(2024, 1, 2),
        "nested": [[1, 2], ["x"]], "inline": [{"a": 1}, 2], "float": 0.5,
        "registry": {"mirrors": {"docker.io": {"endpoint": ["https://m"]}}},
        "hosts": [{"name": "a", "tls": {"ca": "/ca"}}, {"name": "b"}],
    }
    text = render(odd, ("plugins", CRI))
    assert tomllib.loads(text) == {"plugins": {CRI: odd}}
    section, _ = _dropin_doc([(MAIN, "version = 2\n" + text), (DROPIN, None)])
    assert section == cri_section(CONF, odd)


def test_top_level_stops_at_the_first_table() -> None:
    kinds = [(s.kind, s.key) for s in top_level('# c\nversion = 2\n\n"imports" = [\n]\n[t]\n')]
    assert kinds == [("comment", ""), ("keyval", "version"), ("blank", ""),
                     ("keyval", "imports")]


# -- the command -----------------------------------------------------------------------------

def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["install", "containerd", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def system_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """/etc/pykata/configuration.toml, somewhere the test controls (present)."""
    path = tmp_path / "pykata" / "configuration.toml"
    path.parent.mkdir()
    path.write_text("")
    monkeypatch.setattr(config_files, "SYSTEM_CONFIG", path)
    monkeypatch.delenv("PYKATA_CONF_FILE", raising=False)
    return path


def test_cli_prints_the_snippet(capsys: pytest.CaptureFixture[str], system_conf: Path) -> None:
    code, out, err = _run(capsys)
    assert (code, err) == (0, "")
    assert out == GOLDEN.replace(CONF, str(system_conf))
    code, out, err = _run(capsys, "--config-path", "/nowhere/c.toml")
    assert _pykata(tomllib.loads(out))["options"]["ConfigPath"] == "/nowhere/c.toml"
    assert "/nowhere/c.toml does not exist" in err


def test_cli_config_path_never_the_packaged_default(
        capsys: pytest.CaptureFixture[str], system_conf: Path) -> None:
    system_conf.unlink()  # pykata itself would read its packaged defaults now
    _, out, err = _run(capsys)
    assert _pykata(tomllib.loads(out))["options"]["ConfigPath"] == str(system_conf)
    assert "does not exist yet" in err


def test_cli_write_twice_from_nothing(tmp_path: Path, system_conf: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "containerd" / "config.toml"
    code, out, _ = _run(capsys, "--write", "--containerd-config", str(cfg))
    assert code == 0
    dropin = tmp_path / "containerd" / "conf.d" / "pykata.toml"
    assert f"wrote {dropin}" in out and f"created {cfg}" in out and "restart containerd" in out
    assert tomllib.loads(cfg.read_text()) == {
        "version": 2, "imports": [f"{tmp_path}/containerd/conf.d/*.toml"]}
    doc = tomllib.loads(dropin.read_text())
    assert _pykata(doc)["options"]["ConfigPath"] == str(system_conf)
    assert oct(dropin.stat().st_mode & 0o777) == "0o644"
    snapshot = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (cfg, dropin)}
    code, out, _ = _run(capsys, "--write", "--containerd-config", str(cfg))
    assert code == 0
    assert f"{dropin}: unchanged" in out and f"{cfg}: unchanged" in out
    assert "restart" not in out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (cfg, dropin)} == snapshot
    assert sorted(p.name for p in cfg.parent.rglob("*")) == ["conf.d", "config.toml",
                                                            "pykata.toml"]


def test_cli_write_twice_into_debian_config(tmp_path: Path, system_conf: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    real = tmp_path / "real.toml"
    real.write_text(DEBIAN)
    real.chmod(0o640)
    cfg = tmp_path / "config.toml"
    cfg.symlink_to(real)
    dropin = tmp_path / "d" / "pykata.toml"
    argv = ("--write", "--containerd-config", str(cfg), "--drop-in", str(dropin))
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and "the old file is" in out
    assert cfg.is_symlink() and oct(real.stat().st_mode & 0o777) == "0o640"
    assert real.read_text() == DEBIAN.replace(
        "version = 2\n", f'version = 2\nimports = ["{tmp_path}/d/*.toml"]\n')
    assert (tmp_path / "config.toml.pykata-bak").read_text() == DEBIAN
    section = tomllib.loads(dropin.read_text())["plugins"][CRI]
    assert section["cni"]["bin_dir"] == "/usr/lib/cni"
    assert set(section["containerd"]["runtimes"]) == {"runc", "pykata"}
    before = real.read_text(), dropin.read_text()
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and out.count("unchanged") == 2
    assert (real.read_text(), dropin.read_text()) == before


def test_cli_write_refuses_an_unparseable_config(tmp_path: Path, system_conf: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("version = 2\n[plugins\n")
    code, out, err = _run(capsys, "--write", "--containerd-config", str(cfg))
    assert code == EXIT_PYKATA_ERROR and out == ""
    assert f"{cfg}: not valid TOML" in err
    assert cfg.read_text() == "version = 2\n[plugins\n"
    assert sorted(os.listdir(tmp_path)) == ["config.toml", "pykata"]


@pytest.mark.skipif(shutil.which("containerd") is None, reason="containerd is not installed")
def test_containerd_reads_it_as_meant(tmp_path: Path, system_conf: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(DEBIAN)
    assert _run(capsys, "--write", "--containerd-config", str(cfg))[0] == 0
    dump = subprocess.run(["containerd", "-c", str(cfg), "config", "dump"], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    cri = tomllib.loads(dump)["plugins"][CRI]
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni"
    runtimes = cri["containerd"]["runtimes"]
    assert runtimes["runc"]["runtime_type"] == "io.containerd.runc.v2"
    assert runtimes["pykata"]["runtime_type"] == "io.containerd.pykata.v2"
    assert runtimes["pykata"]["options"] == {"ConfigPath": str(system_conf)}
    assert runtimes["pykata"]["pod_annotations"] == ["io.katacontainers.*"]
    assert runtimes["pykata"]["privileged_without_host_devices"] is True
