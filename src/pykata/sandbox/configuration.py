"""The configuration file, for the shim's one-shot `start` and `delete`: they read it
without importing the planning modules that `pykata.sandbox.request` brings (they run for
every container containerd starts, so their start-up is on its path)."""

from __future__ import annotations

from pykata.host.config_files import load_config

__all__ = ["load_config"]
