"""Names host and guest agree on, beyond the wire format: both sides import them.

Pure string building and parsing; no I/O.
"""

from __future__ import annotations

# The agent's endpoints: the virtio-serial port's name, or the vsock port.
AGENT_PORT_NAME = "agent.channel.0"
AGENT_VSOCK_PORT = 1024
# The host's shared directory: its virtiofs tag, and where the agent mounts it; a
# container's files are below it, at <dir>/<container id>/.
SHARED_TAG = "pykatafs"
# The DAX guest image's size is a multiple of the guest's memory block (128 MiB on x86):
# its pages are ZONE_DEVICE, and a hot-plugged DIMM after it must start a block of its own.
DAX_IMAGE_ALIGN = 128 << 20
GUEST_SHARED_DIR = "/run/pykata/shared"
# After a virtio-mem shrink the guest may keep this much more than asked (partly used
# blocks); both sides accept it.
SHRINK_SLACK_BYTES = 4 << 20

# A container's namespace, named in a guest spec: `<prefix><container id>/<type>`. The
# agent resolves it to the /proc/<pid>/ns file of that container's init when it creates a
# container that joins it (CRI's POD mode: the pod's sandbox container's IPC, PID, UTS).
CONTAINER_NS_PREFIX = "/run/pykata/containers/"
# OCI namespace type -> its file under /proc/<pid>/ns/.
NS_FILES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
            "user": "user", "cgroup": "cgroup"}


def container_ns_path(container_id: str, ns_type: str) -> str:
    return f"{CONTAINER_NS_PREFIX}{container_id}/ns/{ns_type}"


def parse_container_ns_path(path: str) -> tuple[str, str] | None:
    """(container id, namespace type) of a path `container_ns_path` made, else None."""
    if not path.startswith(CONTAINER_NS_PREFIX):
        return None
    parts = path[len(CONTAINER_NS_PREFIX):].split("/")
    if len(parts) != 3 or parts[1] != "ns" or not parts[0] or parts[2] not in NS_FILES:
        return None
    return parts[0], parts[2]
