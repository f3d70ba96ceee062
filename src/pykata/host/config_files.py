"""Find and read the configuration files, in Kata's lookup order, and build the Config."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from pykata.domain.config import Config, build_config, parse_toml
from pykata.domain.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/pykata/configuration.toml")


def config_path(explicit: str | None = None) -> Path | None:
    """The file to load over the defaults: explicit, $PYKATA_CONF_FILE, then /etc."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("PYKATA_CONF_FILE")
    if env:
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def load_config(explicit: str | None = None) -> Config:
    text = importlib.resources.files("pykata.domain").joinpath("defaults.toml").read_text()
    docs = [("defaults", parse_toml(text, "defaults"))]
    path = config_path(explicit)
    if path is not None:
        try:
            docs.append((str(path), parse_toml(path.read_text(), str(path))))
        except OSError as exc:
            raise ConfigError(str(path), "(file)", str(path), exc.strerror or str(exc)) from exc
    return build_config(docs)
