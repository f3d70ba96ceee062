"""Renderings of the config model: docs/configuration.md, the packaged defaults.toml, TOML.

Pure: returns text. `scripts/gen-config-docs.py` writes the files, and a unit test fails
when a committed file differs from what the model renders, so neither can drift.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

from pykata.domain.config import KATA_ONLY_KEYS, KATA_SECTIONS
from pykata.domain.config_model import SECTIONS, TYPE_NAMES, KeyInfo, keys
from pykata.domain.toml_text import render, value

GENERATOR = "scripts/gen-config-docs.py"
MODEL = "src/pykata/domain/config_model.py"


def dump_toml(doc: Mapping[str, Any]) -> str:
    """A TOML document of `doc`, leaving out None values (TOML has no null)."""
    return render(_without_none(doc))


def _without_none(doc: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, Mapping):
            out[k] = _without_none(v)
        elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
            out[k] = [_without_none(x) for x in v]
        elif v is not None:
            out[k] = v
    return out


def _type(info: KeyInfo) -> str:
    spec = info.spec
    text = TYPE_NAMES[info.type]
    if spec.choices:
        text += ": " + ", ".join(f"`{c}`" for c in spec.choices)
    if spec.minimum is not None and spec.maximum is not None:
        text += f" {spec.minimum:g} to {spec.maximum:g}"
    elif spec.minimum is not None:
        text += f" \u2265 {spec.minimum:g}"
    elif spec.maximum is not None:
        text += f" \u2264 {spec.maximum:g}"
    if spec.check is not None and spec.check.__doc__:
        text += f", {spec.check.__doc__}"
    return text + (f" ({spec.unit})" if spec.unit else "")


def _annotation(info: KeyInfo) -> str:
    spec = info.spec
    if not spec.annotation:
        return ""
    needs = ["name in `enable_annotations`"] if info.section == "hypervisor" else []
    if spec.path_globs:
        needs.append(f"value matching `{spec.path_globs}`")
    return (f" Annotation `io.katacontainers.config.{info.section}.{spec.annotation}`"
            + (f" ({'; '.join(needs)})." if needs else "."))


def _row(info: KeyInfo) -> str:
    spec = info.spec
    marks = (" *pykata's own key.*" if spec.pykata else "") + (
        " **Not used yet**: accepted and validated for a later release." if not spec.used
        else "")
    text = f"{spec.doc}{_annotation(info)}{marks}".replace("|", "\\|")
    return f"| `{info.name}` | `{value(info.default)}` | {_type(info)} | {text} |"


_INTRO = """\
# Configuration reference

<!-- Generated from {model} by `python {generator}`: edit the model, not this file. -->

pykata reads one main file in Kata's TOML format, then the drop-ins beside it:

1. The main file is the first of: the shim's `ConfigPath` option (`pykata --config FILE`),
   `$PYKATA_CONF_FILE`, `/etc/pykata/configuration.toml`, the packaged default
   (`src/pykata/domain/defaults.toml`, every key at its default). A file named by
   `--config` or `$PYKATA_CONF_FILE` must exist.
2. Every `*.toml` in `config.d/` beside the main file, in lexical order. Tables merge per
   key; scalars and arrays are replaced. Other files there are ignored with a warning.

Keys a file leaves out keep their defaults. An unknown key or section is a warning naming
the file (with a suggestion when it looks like a typo); Kata keys pykata does not implement
are named as such. A wrong type or an out-of-range value is an error naming the file, the
key and the value.

## Annotations

A pod overrides keys with OCI annotations `io.katacontainers.config.<section>.<name>`
(`hypervisor`, `runtime` or `agent`), where the key's entry below names its annotation.
Values are text: booleans as Go's `strconv.ParseBool` reads them (`true`, `1`, `false`,
...), arrays as JSON. Rules, stricter than Kata's:

- A hypervisor annotation applies only if an entry of `enable_annotations` (a regular
  expression) matches the annotation's name as a whole: `path` does not enable
  `jailer_path`. The default list is empty: no hypervisor annotation is accepted.
- A path-valued key (`path`, `kernel`, `initrd`, `virtio_fs_daemon`) also needs its value
  to be a normalised absolute path (no `.`, `..`, `//`) matching a glob of its
  `valid_*_paths` list, where `*` and `?` never cross a `/`. Those lists are empty by
  default: no path may be overridden. A glob cannot see symbolic links: allow only
  directories that untrusted users cannot write to.
- `kernel_params` from an annotation is appended to the configured parameters, as in Kata.
- The values are validated like the configuration file's. Anything refused fails the
  create with an error naming each refused annotation; nothing of the pod starts.
- `enable_annotations` and the `valid_*_paths` lists can never be set by annotation.
"""


def render_markdown() -> str:
    out = [_INTRO.format(model=MODEL, generator=GENERATOR).rstrip("\n")]
    for section, table in SECTIONS.items():
        out.append(f"\n## [{'.'.join(table)}]\n")
        out.append("| key | default | type | meaning |\n|---|---|---|---|")
        out += [_row(info) for info in keys() if info.section == section]
    out.append("\n## Kata settings pykata ignores\n\nAccepted with a warning, so a Kata "
               "configuration file loads:\n")
    for name, why in KATA_SECTIONS.items():
        out.append(f"- `[{name}]`: {why}.")
    out.append("- `[hypervisor.<name>]` other than `qemu`: pykata runs QEMU only.")
    for where, names in KATA_ONLY_KEYS.items():
        out.append(f"- `[{where}]`: " + ", ".join(f"`{n}`" for n in sorted(names)) + ".")
    return "\n".join(out) + "\n"


def render_defaults_toml() -> str:
    out = [f"# pykata's packaged default configuration: every key at its default.\n"
           f"# Generated from {MODEL} by `python {GENERATOR}`: do not edit.\n"
           "# Copy it to /etc/pykata/configuration.toml, or put changes in config.d/*.toml\n"
           "# beside it. Kata's key names where Kata has the key; \"pykata:\" marks pykata's\n"
           "# own keys. docs/configuration.md describes each key."]
    for section, table in SECTIONS.items():
        out.append(f"\n[{'.'.join(table)}]")
        for info in keys():
            if info.section != section:
                continue
            note = ("pykata: " if info.spec.pykata else "") + info.spec.doc.replace("`", "")
            if not info.spec.used:
                note += " (Not used yet.)"
            out += textwrap.wrap(note, 98, initial_indent="# ", subsequent_indent="# ")
            out.append(f"{info.name} = {value(info.default)}")
    return "\n".join(out) + "\n"
