"""The shim binary's one-shot actions without containerd: delete is idempotent and prints
a DeleteResponse; start refuses a pod container whose sandbox shim is not running, and
answers with the live sandbox shim's address without starting another."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest

from pykata.domain.errors import PykataError
from pykata.protocol.pb import shim_pb2
from pykata.shim import bootstrap
from pykata.shim.args import parse_args, socket_path


def _bundle(tmp_path: Path, annotations: dict[str, str]) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"annotations": annotations}))
    return bundle


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    conf = tmp_path / "pykata.toml"
    conf.write_text(f'[runtime]\nstate_dir = "{tmp_path}/run"\n')
    monkeypatch.setenv("PYKATA_CONF_FILE", str(conf))
    return conf


def test_delete_is_idempotent_and_prints_a_delete_response(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, {})
    state = tmp_path / "run" / "sb"
    state.mkdir(parents=True)
    (bundle / bootstrap.MARKER).write_text(json.dumps(
        {"state_dir": str(state), "socket": str(tmp_path / "none.sock")}))
    args = parse_args(["-namespace", "ns", "-id", "sb", "-bundle", str(bundle), "delete"])
    for _ in range(2):
        out = io.BytesIO()
        assert bootstrap.delete(args, out) == 0
        resp = shim_pb2.DeleteResponse.FromString(out.getvalue())
        assert resp.exit_status == 137 and resp.exited_at.seconds > 0
        assert not state.exists(), "a dead shim's sandbox dir is cleared"


def test_delete_leaves_a_live_shims_sandbox_alone(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, {})
    state = tmp_path / "run" / "sb"
    state.mkdir(parents=True)
    sock_path = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(sock_path))
        live.listen(1)
        (bundle / bootstrap.MARKER).write_text(json.dumps(
            {"state_dir": str(state), "socket": str(sock_path)}))
        args = parse_args(["-id", "c2", "-bundle", str(bundle), "delete"])
        assert bootstrap.delete(args, io.BytesIO()) == 0
    assert state.exists()


def test_start_of_a_pod_container_needs_its_sandbox_shim(
        tmp_path: Path, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = _bundle(tmp_path, {"io.kubernetes.cri.container-type": "container",
                                "io.kubernetes.cri.sandbox-id": "sb"})
    monkeypatch.chdir(bundle)
    args = parse_args(["-namespace", "ns", "-address", "/c.sock", "-id", "c1", "start"])
    with pytest.raises(PykataError, match="shim of sandbox sb is not running"):
        bootstrap.start(args, io.BytesIO(), io.BytesIO())
    path = socket_path(f"{tmp_path}/run", "/c.sock", "ns", "sb")
    Path(path).parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(path)
        live.listen(1)
        out = io.BytesIO()
        assert bootstrap.start(args, io.BytesIO(), out) == 0
    assert out.getvalue() == f"unix://{path}".encode()
    assert (bundle / "address").read_text() == f"unix://{path}"
    assert json.loads((bundle / bootstrap.MARKER).read_text())["sandbox_id"] == "sb"
