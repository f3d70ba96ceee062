"""The shim binary's two one-shot actions, as containerd runs them.

`start`: decide which sandbox the task belongs to; for a new sandbox create the listening
socket, fork the daemon that serves it (detached: its own session, no inherited pipe),
then print only the address. A pod's later containers get the sandbox shim's address.
`delete`: after the shim is gone (or never came up), clear what it left and print a
DeleteResponse. Both are idempotent: containerd may run them again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from typing import BinaryIO

from pykata.domain.errors import PykataError
from pykata.sandbox.configuration import load_config
from pykata.shim.args import ShimArgs, pod_role, socket_path

MARKER = "pykata-sandbox.json"   # in the bundle: where delete finds the sandbox


def _read_options(stdin: BinaryIO) -> str:
    """The ConfigPath from the runtime options containerd writes to stdin, if any."""
    if stdin.isatty():
        return ""
    data = stdin.read()
    if not data:
        return ""
    from google.protobuf import any_pb2

    from pykata.protocol.pb import shim_pb2

    options = any_pb2.Any.FromString(data)
    if not options.type_url.endswith("runtimeoptions.v1.Options"):
        return ""
    return shim_pb2.RuntimeOptions.FromString(options.value).config_path


def _annotations(bundle: str) -> dict[str, str]:
    with open(os.path.join(bundle, "config.json")) as f:
        doc = json.load(f)
    annotations = doc.get("annotations") or {} if isinstance(doc, dict) else {}
    return {str(k): str(v) for k, v in annotations.items()}


def _alive(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def _listen(path: str) -> socket.socket | None:
    """A listening socket at `path`; None when a live shim already serves there."""
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        if _alive(path):
            return None
        os.unlink(path)  # left by a shim that died
        return _listen(path)
    sock.listen(16)
    return sock


def start(args: ShimArgs, stdin: BinaryIO, stdout: BinaryIO) -> int:
    bundle = os.getcwd()
    config_path = _read_options(stdin)
    role = pod_role(args.id, _annotations(bundle))
    cfg = load_config(config_path or None)
    from pykata.sandbox.leftovers import sweep

    sweep(cfg.runtime.state_dir)  # what killed shims left (their VMs died with them)
    path = socket_path(cfg.runtime.state_dir, args.address, args.namespace, role.sandbox_id)
    marker = {"state_dir": os.path.join(cfg.runtime.state_dir, role.sandbox_id),
              "socket": path, "sandbox_id": role.sandbox_id}
    with open(os.path.join(bundle, MARKER), "w") as f:
        json.dump(marker, f)
    if not role.is_sandbox:
        if not _alive(path):
            raise PykataError(f"task {args.id}: the shim of sandbox {role.sandbox_id} is not "
                              f"running (no answer on {path})")
    else:
        sock = _listen(path)
        if sock is not None:
            _fork_daemon(args, sock, config_path)
    address = f"unix://{path}"
    with open(os.path.join(bundle, "address"), "w") as f:
        f.write(address)
    stdout.write(address.encode())
    stdout.flush()
    return 0


def _fork_daemon(args: ShimArgs, sock: socket.socket, config_path: str) -> None:
    pid = os.fork()
    if pid:
        sock.close()
        return
    code = 1
    try:
        os.setsid()
        _detach_stdio()
        from pykata.shim.server import serve

        code = serve(args, sock, config_path)
    finally:
        os._exit(code)


def _detach_stdio() -> None:
    """stdin/stdout to /dev/null (containerd waits for start's pipes to close); stderr to
    the bundle's `log` FIFO, which containerd reads, or /dev/null if it cannot be opened."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    try:
        log = os.open("log", os.O_WRONLY | os.O_NONBLOCK)
        os.set_blocking(log, True)
    except OSError:
        log = null
    os.dup2(log, 2)
    for fd in {null, log}:
        os.close(fd)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process's own stdio
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115


def delete(args: ShimArgs, stdout: BinaryIO) -> int:
    bundle = args.bundle or os.getcwd()
    from pykata.sandbox.leftovers import clear_sandbox, sweep
    from pykata.sandbox.rootfs import unmount_below

    unmount_below(os.path.join(bundle, "rootfs"))
    marker = _read_marker(bundle)
    if marker and not _alive(marker["socket"]):
        clear_sandbox(marker["state_dir"])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker["socket"])
    if marker:
        sweep(os.path.dirname(marker["state_dir"]))
    from pykata.protocol.pb import shim_pb2

    resp = shim_pb2.DeleteResponse(exit_status=128 + 9)
    resp.exited_at.FromNanoseconds(time.time_ns())
    stdout.write(resp.SerializeToString())
    stdout.flush()
    return 0


def _read_marker(bundle: str) -> dict[str, str] | None:
    try:
        with open(os.path.join(bundle, MARKER)) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str)
                                            for k in ("state_dir", "socket")):
        return None
    return doc
