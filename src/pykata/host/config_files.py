"""Find and read the configuration files, in Kata's lookup order, and build the Config.

The main file is the first of: the shim's `ConfigPath` option (the CLI's `--config`),
`$PYKATA_CONF_FILE`, /etc/pykata/configuration.toml, the packaged default. A path given
explicitly must exist. Then every `*.toml` in `config.d/` beside the main file is applied
over it, in lexical order; anything else there is ignored with a warning. Validation is
the domain's (`pykata.domain.config`); this module only reads.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pykata.domain
from pykata.domain.config import Config, build_config, parse_toml
from pykata.domain.errors import ConfigError

ENV_VAR = "PYKATA_CONF_FILE"
SYSTEM_CONFIG = Path("/etc/pykata/configuration.toml")
PACKAGED_CONFIG = Path(pykata.domain.__file__).parent / "defaults.toml"
DROPIN_DIR = "config.d"


def config_path(explicit: str | None = None,
                environ: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """The main file and why it was chosen (which step of the lookup found it)."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit), "ConfigPath (--config)"
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]), f"${ENV_VAR}"
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG, "system file"
    return PACKAGED_CONFIG, "packaged default"


def dropins(main: Path) -> tuple[list[Path], list[str]]:
    """The `*.toml` files of `config.d/` beside `main`, in lexical order, and warnings
    naming everything else found there."""
    directory = main.parent / DROPIN_DIR
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    except OSError as exc:
        raise ConfigError(str(directory), "(directory)", str(directory),
                          exc.strerror or str(exc)) from exc
    files: list[Path] = []
    warnings: list[str] = []
    for entry in entries:
        path = Path(entry.path)
        if entry.name.endswith(".toml") and not entry.name.startswith(".") and path.is_file():
            files.append(path)
        else:
            warnings.append(f"{path}: ignored: {DROPIN_DIR} applies only *.toml files")
    return files, warnings


def read_document(path: Path) -> dict[str, Any]:
    """One parsed TOML file; ConfigError naming the file when it cannot be read or parsed."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "(file)", str(path), exc.strerror or str(exc)) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "(file)", str(path), f"not UTF-8: {exc}") from exc
    return parse_toml(text, str(path))


def load_config(explicit: str | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    main, _ = config_path(explicit, environ)
    files, warnings = dropins(main)
    cfg = build_config((str(path), read_document(path)) for path in (main, *files))
    return dataclasses.replace(cfg, warnings=(*warnings, *cfg.warnings)) if warnings else cfg
