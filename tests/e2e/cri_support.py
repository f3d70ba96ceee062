"""Kubernetes' path in end-to-end tests: a private containerd with its CRI plugin, driven over
CRI `runtime.v1` the way kubelet drives it, with runtime handlers `runc` and `pykata`.

`CriHarness` starts containerd inside a network namespace of its own (the CNI bridge and the
pods' veths live there, never in the host's; the pods' namespaces are mounted under its
state dir, not /var/run/netns), imports a busybox image (plus small static test helpers)
and a pause image into CRI's `k8s.io` namespace, and gives:

    with CriHarness() as cri:
        pod = cri.run_pod("web", handler="runc")
        cid = cri.start_container(pod, "srv", ["sleep", "100000"])
        assert cri.exec(cid, "echo", "hi").stdout == b"hi\\n"
        with cri.port_forward(pod.id, 8080) as stream:
            stream.send(b"ping\\n")
            reply = stream.read_all()
        cri.remove_pod(pod.id)
        assert cri.wait_clean() == []

`CriClient` is the gRPC client; `PortForwardStream` a minimal WebSocket client for the
streaming server's port-forward (kubelet's `v4.channel.k8s.io` protocol). Everything the
harness starts it stops by pid; `stop()` returns what was left behind.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import containerd_support
import e2e_support
import grpc
from containerd_support import Containerd
from cri_api import api_pb2 as cri
from google.protobuf.message import Message
from oci_image import PAUSE_REF, build_busybox_image, build_pause_image, compile_static

__all__ = ["BOOT_TIMEOUT", "TOOLS_REF", "CriClient", "CriError", "CriHarness", "ExecResult",
           "Pod", "PortForwardStream", "missing_reason", "pykata_missing_reason"]

BOOT_TIMEOUT = 90.0       # a pykata VM boot under TCG on a busy 2-core host, with margin
SETTLE_TIMEOUT = 20.0     # after a pod's removal its shim stops its VM and exits
STREAM_PORT = 10010       # the streaming server's, on 127.0.0.1 in the harness's netns
CNI_DIR = Path("/usr/lib/cni")
NETNS_DIR = Path("/var/run/netns")
SHIM = "containerd-shim-pykata-v2"
# The shim containerd starts must run the pykata these tests import (a worktree's, not
# whatever an editable install points at). Found without importing pykata here.
PYKATA_SRC = Path(__file__).resolve().parents[2] / "src"
# busybox plus the static helpers below: what the tests' containers run.
TOOLS_REF = "docker.io/library/busybox:pykata-tools"
# `shmmk KEY SIZE`: create a SysV shared memory segment (busybox has no ipcmk); print its id.
SHMMK_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/ipc.h>
#include <sys/shm.h>

int main(int argc, char **argv) {
    if (argc != 3) { fputs("usage: shmmk KEY SIZE\n", stderr); return 2; }
    int id = shmget((key_t)strtoul(argv[1], 0, 0), strtoul(argv[2], 0, 0), IPC_CREAT | 0600);
    if (id < 0) { perror("shmget"); return 1; }
    printf("%d\n", id);
    return 0;
}
"""


def missing_reason() -> str | None:
    """Why the CRI tests cannot run here, or None."""
    reason = containerd_support.missing_reason()
    if reason:
        return reason
    for tool in ("nsenter", "ip"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install util-linux iproute2)"
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_DIR / plugin).exists():
            return f"no CNI plugin {CNI_DIR / plugin} (apt-get install containernetworking-plugins)"
    return None


def pykata_missing_reason() -> str | None:
    """Why the `pykata` handler cannot run here (no QEMU, image or shim), or None."""
    reason = e2e_support.missing_reason()
    if reason:
        return reason
    if not (Path(sys.executable).parent / SHIM).exists():
        return f"{SHIM} is not installed beside {sys.executable} (pip install -e .)"
    return None


# --- the gRPC client ---------------------------------------------------------------------

R = TypeVar("R", bound=Message)


class CriError(Exception):
    """A CRI call failed: `code` is its gRPC status, `details` containerd's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method, self.code, self.details = method, code, details


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


class CriClient:
    """CRI `runtime.v1` over containerd's gRPC socket: one method per call the tests use.

    Every failure raises `CriError`; `timeout` is the call's deadline in seconds.
    """

    def __init__(self, address: Path) -> None:
        self.channel = grpc.insecure_channel(f"unix://{address}")

    def close(self) -> None:
        self.channel.close()

    def call(self, service: str, method: str, request: Message, response_type: type[R],
             timeout: float = 60) -> R:
        path = f"/runtime.v1.{service}/{method}"
        stub = self.channel.unary_unary(path, request_serializer=_serialize,
                                        response_deserializer=response_type.FromString)
        try:
            return stub(request, timeout=timeout)
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = (e.details() if isinstance(e, grpc.Call) else None) or str(e)
            raise CriError(method, code, details) from None

    def runtime(self, method: str, request: Message, response_type: type[R],
                timeout: float = 60) -> R:
        return self.call("RuntimeService", method, request, response_type, timeout)

    def version(self) -> cri.VersionResponse:
        return self.runtime("Version", cri.VersionRequest(version="v1"), cri.VersionResponse)

    def status(self) -> cri.StatusResponse:
        return self.runtime("Status", cri.StatusRequest(), cri.StatusResponse)

    def run_pod_sandbox(self, config: cri.PodSandboxConfig, handler: str,
                        timeout: float = BOOT_TIMEOUT + 30) -> str:
        req = cri.RunPodSandboxRequest(config=config, runtime_handler=handler)
        return self.runtime("RunPodSandbox", req, cri.RunPodSandboxResponse,
                            timeout).pod_sandbox_id

    def stop_pod_sandbox(self, pod_id: str, timeout: float = 120) -> None:
        self.runtime("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id),
                     cri.StopPodSandboxResponse, timeout)

    def remove_pod_sandbox(self, pod_id: str, timeout: float = 120) -> None:
        self.runtime("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                     cri.RemovePodSandboxResponse, timeout)

    def pod_sandbox_status(self, pod_id: str,
                           verbose: bool = False) -> cri.PodSandboxStatusResponse:
        req = cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose)
        return self.runtime("PodSandboxStatus", req, cri.PodSandboxStatusResponse)

    def list_pod_sandbox(self) -> list[cri.PodSandbox]:
        return list(self.runtime("ListPodSandbox", cri.ListPodSandboxRequest(),
                                 cri.ListPodSandboxResponse).items)

    def create_container(self, pod_id: str, config: cri.ContainerConfig,
                         sandbox_config: cri.PodSandboxConfig, timeout: float = 120) -> str:
        req = cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=config,
                                         sandbox_config=sandbox_config)
        return self.runtime("CreateContainer", req, cri.CreateContainerResponse,
                            timeout).container_id

    def start_container(self, container_id: str, timeout: float = 120) -> None:
        self.runtime("StartContainer", cri.StartContainerRequest(container_id=container_id),
                     cri.StartContainerResponse, timeout)

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        """StopContainer with a grace period of `timeout` seconds (0: kill at once)."""
        req = cri.StopContainerRequest(container_id=container_id, timeout=timeout)
        self.runtime("StopContainer", req, cri.StopContainerResponse, timeout + 60)

    def remove_container(self, container_id: str, timeout: float = 120) -> None:
        self.runtime("RemoveContainer", cri.RemoveContainerRequest(container_id=container_id),
                     cri.RemoveContainerResponse, timeout)

    def container_status(self, container_id: str) -> cri.ContainerStatus:
        req = cri.ContainerStatusRequest(container_id=container_id)
        return self.runtime("ContainerStatus", req, cri.ContainerStatusResponse).status

    def list_containers(self, pod_id: str = "") -> list[cri.Container]:
        req = cri.ListContainersRequest(filter=cri.ContainerFilter(pod_sandbox_id=pod_id))
        return list(self.runtime("ListContainers", req, cri.ListContainersResponse).containers)

    def exec_sync(self, container_id: str, cmd: Sequence[str], timeout: int = 60) -> ExecResult:
        req = cri.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout)
        r = self.runtime("ExecSync", req, cri.ExecSyncResponse, timeout + 30)
        return ExecResult(r.exit_code, r.stdout, r.stderr)

    def port_forward(self, pod_id: str, ports: Sequence[int]) -> str:
        """The streaming server's URL for one port-forward connection (single use)."""
        req = cri.PortForwardRequest(pod_sandbox_id=pod_id, port=list(ports))
        return self.runtime("PortForward", req, cri.PortForwardResponse).url

    def list_images(self) -> list[cri.Image]:
        return list(self.call("ImageService", "ListImages", cri.ListImagesRequest(),
                              cri.ListImagesResponse).images)

    def image_status(self, ref: str) -> cri.Image | None:
        req = cri.ImageStatusRequest(image=cri.ImageSpec(image=ref))
        r = self.call("ImageService", "ImageStatus", req, cri.ImageStatusResponse)
        return r.image if r.HasField("image") else None


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


# --- port-forward over WebSocket ---------------------------------------------------------

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CLONE_NEWNET = 0x40000000
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class PortForwardStream:
    """One forwarded TCP connection to a pod's port, through containerd's streaming server.

    kubelet's streaming library (vendored in containerd 1.6) speaks WebSocket with the
    subprotocol `v4.channel.k8s.io`: every message starts with a channel byte, channel 0
    is the data stream and channel 1 the error stream of the (one) port, and the server's
    first bytes on each channel are the port, uint16 little-endian. v4 has no half-close:
    closing the WebSocket ends the forward (and containerd 1.6 ends it as soon as either
    direction ends). Use `connect(url, port, netns)`, then send/recv/read_all/close.
    """

    def __init__(self, sock: socket.socket, port: int) -> None:
        self.sock, self.port = sock, port
        self._buf = b""                         # raw bytes read, not yet parsed as frames
        self._prefix = {0: b"", 1: b""}         # the port prefix seen so far, per channel
        self._data: list[bytes] = []
        self._errors = b""
        self._fragments = b""
        self.closed_by_peer = False

    @classmethod
    def connect(cls, url: str, port: int, netns: Path | None = None,
                timeout: float = 30) -> PortForwardStream:
        parts = urlsplit(url)
        host, tcp_port = parts.hostname or "127.0.0.1", parts.port or 80
        sock = connect_tcp(host, tcp_port, netns, timeout)
        stream = cls(sock, port)
        try:
            stream._handshake(parts.netloc, parts.path + (f"?{parts.query}" if parts.query else ""))
        except BaseException:
            sock.close()
            raise
        return stream

    def __enter__(self) -> PortForwardStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def error(self) -> str:
        """What the server wrote on the port's error channel (e.g. a failed dial)."""
        return self._errors.decode(errors="replace")

    def send(self, data: bytes) -> None:
        self._send_frame(OP_BINARY, b"\x00" + data)

    def recv(self, timeout: float = 30) -> bytes:
        """The next bytes from the pod's port; b"" once the forward has ended."""
        deadline = time.monotonic() + timeout
        while not self._data and not self.closed_by_peer:
            self._read_message(deadline)
        return self._data.pop(0) if self._data else b""

    def read_all(self, timeout: float = 30) -> bytes:
        """Everything until the forward ends (the pod's side closed)."""
        deadline = time.monotonic() + timeout
        chunks = []
        while chunk := self.recv(max(0.1, deadline - time.monotonic())):
            chunks.append(chunk)
        return b"".join(chunks)

    def read_until(self, marker: bytes, timeout: float = 30) -> bytes:
        """Bytes up to and including marker, or all there was if the forward ended first."""
        deadline = time.monotonic() + timeout
        got = b""
        while marker not in got:
            chunk = self.recv(max(0.1, deadline - time.monotonic()))
            if not chunk:
                break
            got += chunk
        return got

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if not self.closed_by_peer:
                self._send_frame(OP_CLOSE, struct.pack("!H", 1000))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    # -- the WebSocket protocol (RFC 6455, client side) --

    def _handshake(self, netloc: str, path: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n"
                   f"Origin: http://{netloc}\r\n\r\n")
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"port-forward handshake: connection closed: {self._buf!r}")
            self._buf += chunk
        head, _, self._buf = self._buf.partition(b"\r\n\r\n")
        status, *lines = head.decode(errors="replace").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        if status.split()[1:2] != ["101"]:
            raise ConnectionError(f"port-forward handshake refused: {status}: {self._buf!r}")
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise ConnectionError(f"port-forward handshake: bad accept key in {headers}")

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def _read_exact(self, n: int, deadline: float) -> bytes | None:
        while len(self._buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("port-forward: nothing from the pod in time") from None
            except OSError:
                chunk = b""
            if not chunk:
                return None
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _read_message(self, deadline: float) -> None:
        """Read one frame; file a complete data message under its channel."""
        head = self._read_exact(2, deadline)
        if head is None:
            self.closed_by_peer = True
            return
        fin, opcode, n = head[0] & 0x80, head[0] & 0x0F, head[1] & 0x7F
        if n >= 126:
            ext = self._read_exact(2 if n == 126 else 8, deadline) or b""
            n = int.from_bytes(ext, "big")
        mask = self._read_exact(4, deadline) if head[1] & 0x80 else b""
        payload = self._read_exact(n, deadline) if n else b""
        if payload is None or mask is None:
            self.closed_by_peer = True
            return
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if opcode == OP_CLOSE:
            self.closed_by_peer = True
            with contextlib.suppress(OSError):
                self._send_frame(OP_CLOSE, payload[:2])
        elif opcode == OP_PING:
            self._send_frame(OP_PONG, payload)
        elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            self._fragments += payload
            if fin:
                message, self._fragments = self._fragments, b""
                if message:
                    self._file(message[0], message[1:])

    def _file(self, channel: int, data: bytes) -> None:
        if channel not in self._prefix:
            return
        missing = 2 - len(self._prefix[channel])
        if missing > 0:  # the port, before anything else on the channel
            self._prefix[channel] += data[:missing]
            data = data[missing:]
        if not data:
            return
        if channel == 0:
            self._data.append(data)
        else:
            self._errors += data


def connect_tcp(host: str, port: int, netns: Path | None, timeout: float) -> socket.socket:
    """A TCP connection made from inside network namespace netns (None: this one).

    A short thread enters the namespace (setns is per thread) and connects; the socket
    keeps its namespace after the thread is gone.
    """
    if netns is None:
        return socket.create_connection((host, port), timeout)
    result: dict[str, socket.socket | BaseException] = {}

    def connect() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["sock"] = socket.create_connection((host, port), timeout)
        except BaseException as e:
            result["error"] = e

    thread = threading.Thread(target=connect, name=f"connect-in-{netns.name}")
    thread.start()
    thread.join()
    sock = result.get("sock")
    if isinstance(sock, socket.socket):
        return sock
    error = result.get("error")
    raise error if isinstance(error, BaseException) else RuntimeError("connect: no result")


# --- the daemon --------------------------------------------------------------------------


class CriContainerd(Containerd):
    """A `Containerd` with its CRI plugin on, runtime handlers runc (default) and pykata,
    a bridge CNI network of its own, and its streaming server on 127.0.0.1:STREAM_PORT, all
    in network namespace `netns` (which the caller creates and removes)."""

    def __init__(self, *, netns: str, base_dir: Path, env: Mapping[str, str]) -> None:
        super().__init__(path_prepend=[Path(sys.executable).parent], env=env,
                         namespace="k8s.io", base_dir=base_dir,
                         argv_prefix=["nsenter", f"--net={NETNS_DIR / netns}"])
        self.cni_conf_dir = self.base / "cni" / "net.d"
        self.pod_netns_dir = self.state / "io.containerd.grpc.v1.cri" / "netns"
        self.cni_data_dir = self.base / "cni" / "ipam"

    def config_toml(self) -> str:
        self.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        (self.cni_conf_dir / "10-pykata-cri.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0",
            "name": "pykata-cri",
            "plugins": [{
                "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
                "ipam": {"type": "host-local", "dataDir": str(self.cni_data_dir),
                         "ranges": [[{"subnet": "10.88.0.0/16"}]],
                         "routes": [{"dst": "0.0.0.0/0"}]},
            }],
        }, indent=1))
        cri_ = '[plugins."io.containerd.grpc.v1.cri"'
        return "\n".join([
            "version = 2",
            f'root = "{self.root}"',
            f'state = "{self.state}"',
            'disabled_plugins = ["io.containerd.snapshotter.v1.aufs",'
            ' "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",'
            ' "io.containerd.snapshotter.v1.devmapper"]',
            "[grpc]", f'  address = "{self.address}"',
            "[ttrpc]", f'  address = "{self.ttrpc_address}"',
            "[debug]", '  level = "debug"',
            '[plugins."io.containerd.internal.v1.opt"]', f'  path = "{self.root / "opt"}"',
            f"{cri_}]",
            # Without it runc fails every pod here: "can't get final child's PID from pipe".
            "  restrict_oom_score_adj = true",
            f'  sandbox_image = "{PAUSE_REF}"',
            '  stream_server_address = "127.0.0.1"',
            f'  stream_server_port = "{STREAM_PORT}"',
            "  enable_selinux = false",
            # Pod network namespaces under our state dir, not the host's /var/run/netns.
            "  netns_mounts_under_state_dir = true",
            f"{cri_}.containerd]",
            '  default_runtime_name = "runc"',
            '  snapshotter = "overlayfs"',
            f"{cri_}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"{cri_}.containerd.runtimes.pykata]",
            '  runtime_type = "io.containerd.pykata.v2"',
            '  pod_annotations = ["io.katacontainers.*"]',
            '  container_annotations = ["io.katacontainers.*"]',
            f"{cri_}.cni]",
            f'  bin_dir = "{CNI_DIR}"',
            f'  conf_dir = "{self.cni_conf_dir}"',
            "  max_conf_num = 1",
            "",
        ])


# --- the harness -------------------------------------------------------------------------


@dataclass
class Pod:
    id: str
    name: str
    handler: str
    config: cri.PodSandboxConfig
    containers: list[str] = field(default_factory=list)


class CriHarness:
    """A private CRI containerd in a network namespace of its own, images imported; see the
    module docstring. `start()`/`stop()` or a `with` block; `stop()` returns leftovers."""

    def __init__(self) -> None:
        # /tmp and short: sockets (containerd's, the shims', pykata's) need short paths.
        self.base = Path(tempfile.mkdtemp(prefix="cri-", dir="/tmp"))
        self.netns = f"pykata-cri-{os.getpid()}-{self.base.name[-6:]}"
        self.netns_path = NETNS_DIR / self.netns
        self.state_dir = self.base / "pk"             # pykata's state (shim sockets, VMs)
        self.cgroup_parent = f"pykata-cri-{os.getpid()}-{self.base.name[-6:]}"
        conf = self.base / "pykata.toml"
        conf.write_text(f'[runtime]\nstate_dir = "{self.state_dir}"\n'
                        f'[image]\ndir = "{e2e_support.IMAGE_DIR}"\n')
        self.shim_env = {"PYKATA_CONF_FILE": str(conf), "PYTHONPATH": str(PYKATA_SRC)}
        self.ctrd = CriContainerd(netns=self.netns, base_dir=self.base, env=self.shim_env)
        self._client: CriClient | None = None
        self.has_shmmk = False
        self._netns_made = False

    def __enter__(self) -> CriHarness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def client(self) -> CriClient:
        """The CRI client (once started)."""
        assert self._client is not None, "the harness is not started"
        return self._client

    def start(self) -> CriHarness:
        """Namespace, daemon, images; wait until CRI reports the runtime and network ready."""
        try:
            _run("ip", "netns", "add", self.netns)
            self._netns_made = True
            _run("ip", "-n", self.netns, "link", "set", "lo", "up")
            images = self.base / "images"
            shmmk = compile_static(SHMMK_C)
            self.has_shmmk = shmmk is not None
            extra = {"bin/shmmk": (shmmk, 0o755)} if shmmk else {}
            build_busybox_image(images / "tools.tar", ref=TOOLS_REF, extra_files=extra)
            build_pause_image(images / "pause.tar")
            self.ctrd.start()
            self.ctrd.import_image(images / "tools.tar", TOOLS_REF)
            self.ctrd.import_image(images / "pause.tar", PAUSE_REF)
            self._client = CriClient(self.ctrd.address)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            conditions = {c.type: c for c in self.client.status().status.conditions}
            if all(c.status for c in conditions.values()) and conditions:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRI not ready: {conditions}\n{self.ctrd.log_tail()}")
            time.sleep(0.2)

    # -- pods and containers --

    def pod_config(self, name: str, *, sysctls: Mapping[str, str] | None = None,
                   namespaces: cri.NamespaceOption | None = None, privileged: bool = False,
                   annotations: Mapping[str, str] | None = None) -> cri.PodSandboxConfig:
        """What kubelet would send for a pod: unique uid, a log dir, our cgroup parent.

        Namespaces default to POD for network, PID and IPC (pid set explicitly; kubelet's
        default is CONTAINER unless the pod shares its process namespace).
        """
        uid = uuid.uuid4().hex
        log_dir = self.base / "logs" / uid
        log_dir.mkdir(parents=True, exist_ok=True)
        ns = namespaces or cri.NamespaceOption(network=cri.POD, pid=cri.POD, ipc=cri.POD)
        return cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace="default",
                                            attempt=0),
            hostname=name, log_directory=str(log_dir),
            labels={"pykata-test": name}, annotations=dict(annotations or {}),
            linux=cri.LinuxPodSandboxConfig(
                cgroup_parent=f"/{self.cgroup_parent}",
                sysctls=dict(sysctls or {}),
                security_context=cri.LinuxSandboxSecurityContext(
                    namespace_options=ns, privileged=privileged)))

    def run_pod(self, name: str, *, handler: str = "runc",
                config: cri.PodSandboxConfig | None = None,
                sysctls: Mapping[str, str] | None = None,
                namespaces: cri.NamespaceOption | None = None, privileged: bool = False,
                annotations: Mapping[str, str] | None = None) -> Pod:
        """RunPodSandbox with `config`, or else `pod_config(name, ...)` of the options."""
        config = config or self.pod_config(name, sysctls=sysctls, namespaces=namespaces,
                                           privileged=privileged, annotations=annotations)
        pod_id = self.client.run_pod_sandbox(config, handler)
        return Pod(pod_id, name, handler, config)

    def container_config(self, pod: Pod, name: str, command: Sequence[str], *,
                         image: str = TOOLS_REF, privileged: bool = False,
                         add_capabilities: Sequence[str] = (),
                         annotations: Mapping[str, str] | None = None) -> cri.ContainerConfig:
        """A container as kubelet would ask: the pod's namespace options, a log file."""
        pod_ns = pod.config.linux.security_context.namespace_options
        return cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=name, attempt=0),
            image=cri.ImageSpec(image=image), command=list(command),
            envs=[cri.KeyValue(key="PATH", value=containerd_support.IMAGE_PATH)],
            log_path=f"{name}.log", annotations=dict(annotations or {}),
            linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(
                privileged=privileged, namespace_options=pod_ns,
                capabilities=cri.Capability(add_capabilities=list(add_capabilities)))))

    def start_container(self, pod: Pod, name: str, command: Sequence[str], *,
                        image: str = TOOLS_REF, privileged: bool = False,
                        add_capabilities: Sequence[str] = (),
                        annotations: Mapping[str, str] | None = None) -> str:
        """CreateContainer + StartContainer; returns the container id."""
        config = self.container_config(pod, name, command, image=image, privileged=privileged,
                                       add_capabilities=add_capabilities,
                                       annotations=annotations)
        cid = self.client.create_container(pod.id, config, pod.config)
        pod.containers.append(cid)
        self.client.start_container(cid)
        return cid

    def exec(self, container_id: str, *cmd: str, timeout: int = 60) -> ExecResult:
        return self.client.exec_sync(container_id, cmd, timeout)

    def port_forward(self, pod_id: str, port: int, timeout: float = 30) -> PortForwardStream:
        """One new forwarded connection to `port` of the pod (a fresh PortForward URL)."""
        url = self.client.port_forward(pod_id, [port])
        return PortForwardStream.connect(url, port, self.netns_path, timeout)

    def remove_pod(self, pod_id: str) -> None:
        """StopPodSandbox then RemovePodSandbox (which removes its containers), as kubelet."""
        self.client.stop_pod_sandbox(pod_id)
        self.client.remove_pod_sandbox(pod_id)

    @contextlib.contextmanager
    def pod(self, name: str, *, handler: str = "runc", sysctls: Mapping[str, str] | None = None,
            namespaces: cri.NamespaceOption | None = None, privileged: bool = False,
            annotations: Mapping[str, str] | None = None) -> Iterator[Pod]:
        """A running pod that is removed however the block ends."""
        pod = self.run_pod(name, handler=handler, sysctls=sysctls, namespaces=namespaces,
                           privileged=privileged, annotations=annotations)
        try:
            yield pod
        finally:
            self.remove_pod(pod.id)

    # -- leftovers --

    def leftovers(self) -> list[str]:
        """What exists now that a finished test must not leave: pods and containers CRI
        lists, processes naming the harness's dirs (shims, QEMU), mounts under them, pod
        cgroups, pod network namespaces, pykata sandbox state."""
        found: list[str] = []
        if self._client is not None and self.ctrd.proc and self.ctrd.proc.poll() is None:
            found += [f"pod {p.id} {p.metadata.name}" for p in self.client.list_pod_sandbox()]
            found += [f"container {c.id} {c.metadata.name}" for c in self.client.list_containers()]
        found += containerd_support.leftovers(self.base, exclude=[self.ctrd.pid or 0])
        found += [f"cgroup {p}" for p in self._pod_cgroups()]
        if self.ctrd.pod_netns_dir.exists():
            found += [f"pod netns {p}" for p in self.ctrd.pod_netns_dir.iterdir()]
        if self.state_dir.exists():
            found += [f"sandbox dir {p}" for p in self.state_dir.iterdir()
                      if p.name not in ("s", e2e_support.TEMPLATE)]
            found += [f"shim socket {p}" for p in self.state_dir.glob("s/*")]
        return found

    def wait_clean(self, timeout: float = SETTLE_TIMEOUT) -> list[str]:
        """Leftovers, once they are gone or after timeout (shims and VMs end a bit later)."""
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def remove_all(self) -> list[str]:
        """Stop and remove every pod CRI lists; return the errors."""
        errors: list[str] = []
        if self._client is None:
            return errors
        for p in self.client.list_pod_sandbox():
            try:
                self.remove_pod(p.id)
            except CriError as e:
                errors.append(f"pod {p.id}: {e}")
        return errors

    def _pod_cgroups(self) -> list[Path]:
        roots = Path("/sys/fs/cgroup")
        return sorted(p for top in roots.glob(f"*/{self.cgroup_parent}") for p in top.iterdir()
                      if p.is_dir())

    def stop(self) -> list[str]:
        """Remove all pods, stop containerd, remove what is left (namespaces, cgroups, dirs).

        Returns what was left behind before that cleanup; [] is a clean run.
        """
        found: list[str] = []
        if self._client is not None and self.ctrd.proc and self.ctrd.proc.poll() is None:
            with contextlib.suppress(CriError):
                found += [f"pod {p.id} {p.metadata.name} (still there at stop)"
                          for p in self.client.list_pod_sandbox()]
            found += self.remove_all()
            found += self.wait_clean()
        if self._client is not None:
            self._client.close()
            self._client = None
        found += self.ctrd.stop()
        for top in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}"):
            for d in sorted((p for p in top.rglob("*") if p.is_dir()),
                            key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
        if self._netns_made:
            self._netns_made = False
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
        shutil.rmtree(self.base, ignore_errors=True)
        return list(dict.fromkeys(found))


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


def module_harness(what: str) -> Iterator[CriHarness]:
    """A module's CRI harness (skipped with the reason where it cannot run); after the
    module, nothing it made may be left."""
    import pytest

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    harness = CriHarness().start()
    yield harness
    left = harness.stop()
    assert not left, f"{what} left things behind: {left}"
    assert not harness.base.exists() and not harness.netns_path.exists()
