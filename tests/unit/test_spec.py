from __future__ import annotations

from typing import Any

import pytest

from pykata.domain.errors import SpecError
from pykata.domain.spec import default_spec, parse_spec


def test_default_spec_round_trips() -> None:
    spec = parse_spec(default_spec(["sh", "-c", "echo hi"]), "default")
    assert spec.process.args == ("sh", "-c", "echo hi")
    assert spec.process.cwd == "/"
    assert spec.process.user.uid == 0
    assert spec.root_path == "rootfs"
    assert spec.root_readonly is True
    assert any(m["destination"] == "/tmp" for m in spec.doc["mounts"])


def test_user_and_env_parsed() -> None:
    doc = default_spec(["id"])
    doc["process"]["user"] = {"uid": 1000, "gid": 100, "additionalGids": [5, 6]}
    doc["process"]["env"].append("FOO=bar")
    spec = parse_spec(doc, "c.json")
    assert (spec.process.user.uid, spec.process.user.gid) == (1000, 100)
    assert spec.process.user.additional_gids == (5, 6)
    assert "FOO=bar" in spec.process.env


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = default_spec(["true"])
    *parents, last = path.split(".")
    target = doc
    for p in parents:
        target = target[p]
    target[last] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ([], "(document)"),
        (_with("root.path", ""), "root.path"),
        (_with("process.args", []), "process.args"),
        (_with("process.args", ["ok", 3]), "process.args"),
        (_with("process.cwd", "relative"), "process.cwd"),
        (_with("process.env", ["NOEQUALS"]), "process.env"),
        (_with("process.user", {"uid": -1}), "process.user"),
        (_with("process", None), "process"),
    ],
    ids=["not-object", "empty-root", "no-args", "non-string-arg", "relative-cwd", "bad-env",
         "negative-uid", "no-process"],
)
def test_bad_specs_name_the_key(doc: Any, key: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(doc, "config.json")
    assert err.value.key == key
    assert str(err.value).startswith("config.json: ")
