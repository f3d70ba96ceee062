"""The agent's settings: guest defaults, parsed from /etc/pykata/agent.json.

Every path the agent touches is a setting, so the service layer runs on a host (tests)
against temporary directories. Parsing is pure (text in, AgentConfig out); reading the
file is the caller's job. Value types in the agent are NamedTuples, not dataclasses: a
dataclass compiles its methods at import, tens of milliseconds each under TCG.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from pykata.domain.contract import AGENT_PORT_NAME, AGENT_VSOCK_PORT, GUEST_SHARED_DIR
from pykata.domain.errors import ConfigError

CONFIG_PATH = "/etc/pykata/agent.json"


class AgentConfig(NamedTuple):
    oci_runtime: str = "/usr/bin/crun"
    # None: the runtime's own default (/run/crun, /run/runc).
    runtime_root: str | None = None
    # Bundles live in <state_dir>/containers/<id>/.
    state_dir: str = "/run/pykata"
    # A relative spec root.path is taken as <shared_root>/<container id>/<root.path>.
    shared_root: str = GUEST_SHARED_DIR
    modules: tuple[str, ...] = ()
    port_name: str = AGENT_PORT_NAME
    vsock_port: int = AGENT_VSOCK_PORT
    # Where sysctls a container's spec names are written (the VM's own, for `net.*`).
    sysctl_root: str = "/proc/sys"

    def with_overrides(self, **values: Any) -> AgentConfig:
        """A copy with every value that is not None replaced."""
        return self._replace(**{k: v for k, v in values.items() if v is not None})


_STR_KEYS = ("oci_runtime", "runtime_root", "state_dir", "shared_root", "port_name")


def parse_config(text: str, source: str = CONFIG_PATH) -> AgentConfig:
    """Known keys are type-checked; unknown keys are ignored so the image may add some."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(source, "<document>", text[:40], f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(source, "<document>", doc, "must be a JSON object")
    values: dict[str, Any] = {}
    for key in _STR_KEYS:
        if key in doc:
            if not isinstance(doc[key], str) or not doc[key]:
                raise ConfigError(source, key, doc[key], "must be a non-empty string")
            values[key] = doc[key]
    modules = doc.get("modules", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ConfigError(source, "modules", modules, "must be a list of paths")
    values["modules"] = tuple(modules)
    port = doc.get("vsock_port", AGENT_VSOCK_PORT)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 2**32:
        raise ConfigError(source, "vsock_port", port, "must be a port number")
    values["vsock_port"] = port
    return AgentConfig().with_overrides(**values)
