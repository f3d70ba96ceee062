"""docs/configuration.md and defaults.toml are generated from the model and must be fresh."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from pykata.domain.config import Config, build_config, keys
from pykata.domain.config_docs import dump_toml, render_defaults_toml, render_markdown
from pykata.host.config_files import PACKAGED_CONFIG

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "run `python scripts/gen-config-docs.py`"


def test_configuration_md_is_fresh() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render_markdown(), f"docs/configuration.md is stale: {REGENERATE}"


def test_defaults_toml_is_fresh() -> None:
    assert PACKAGED_CONFIG.read_text() == render_defaults_toml(), \
        f"defaults.toml is stale: {REGENERATE}"


def test_defaults_toml_holds_every_key_at_its_default() -> None:
    doc = tomllib.loads(render_defaults_toml())
    cfg = build_config([("defaults", doc)])
    assert cfg == Config()
    assert cfg.warnings == ()
    assert sum(len(t) for t in (doc["hypervisor"]["qemu"], doc["agent"]["pykata"],
                                doc["runtime"], doc["image"], doc["factory"])) == len(keys())


def test_every_key_is_documented_with_its_marks() -> None:
    md = render_markdown()
    for info in keys():
        row = next(line for line in md.splitlines() if line.startswith(f"| `{info.name}` |"))
        assert ("*pykata's own key.*" in row) == info.spec.pykata, info.dotted
        assert ("**Not used yet**" in row) == (not info.spec.used), info.dotted
        if info.spec.annotation:
            assert f"io.katacontainers.config.{info.section}.{info.spec.annotation}" in row


@pytest.mark.parametrize(
    "doc",
    [
        {"a": 1, "b": "x\"y\\z\n\u00e9", "c": [1, 2], "d": True, "e": 1.5},
        {"t": {"u": {"k": "v"}, "k": []}, "top": 0},
        {"host": {"devices": {"/dev/kvm": True}, "numa": [{"id": 0, "cpus": "0-1"},
                                                         {"id": 1, "cpus": "2-3"}]}},
    ],
    ids=["scalars", "nested", "quoted-keys-and-array-of-tables"],
)
def test_dump_toml_round_trips(doc: dict[str, Any]) -> None:
    assert tomllib.loads(dump_toml(doc)) == doc
