"""A process's terminal: the pty master the OCI runtime sends over a console socket.

`crun create|exec --console-socket PATH` opens the pty inside the container, connects to
PATH and sends the master with SCM_RIGHTS, all before it exits. So the agent listens
before it runs the runtime and takes the fd once the runtime has exited: no task runs
in between, and a runtime that failed leaves nothing to collect. Imported only when a
process asks for a terminal, so fcntl and termios stay out of the agent's boot.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
import termios

from pykata.agent.stdio import EmptyReader, PipeReader, PipeWriter, ProcessStdio

# What the runtime sends with the fd: the pty's name (runc), or a byte (crun).
_MAX_MESSAGE = 4096
MAX_WINDOW = 0xFFFF  # struct winsize holds unsigned shorts


class ConsoleSocket:
    """A listening unix socket at `path` for one runtime call; `close()` removes it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.bind(path)
            self._sock.listen(1)
        except BaseException:
            self._sock.close()
            raise

    def receive(self) -> int:
        """The pty master (close-on-exec) the runtime sent; call after the runtime exited."""
        self._sock.setblocking(False)
        try:
            conn, _ = self._sock.accept()
        except BlockingIOError:
            raise OSError(errno.EPROTO, "the OCI runtime never connected to the console "
                          "socket", self.path) from None
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, _MAX_MESSAGE, 1,
                                           socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT)
        if not fds:
            raise OSError(errno.EPROTO, "the OCI runtime sent no terminal", self.path)
        if not os.isatty(fds[0]):
            os.close(fds[0])
            raise OSError(errno.EPROTO, "the OCI runtime sent an fd that is no terminal",
                          self.path)
        return fds[0]

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def terminal_stdio(master: int) -> ProcessStdio:
    """stdout reads the master, stdin writes a duplicate of it (so closing stdin leaves
    the terminal up), stderr is empty: the terminal merges both output streams."""
    return ProcessStdio(PipeWriter(os.dup(master)), PipeReader(master), EmptyReader(),
                        tty=master)


def set_window_size(master: int, rows: int, columns: int) -> None:
    """TIOCSWINSZ; the kernel sends SIGWINCH to the terminal's foreground process group."""
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
