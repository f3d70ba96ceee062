"""A process's stdio, read and written without blocking the event loop.

Three pipes (`pipe_stdio`): the agent keeps the parent ends (stdin's write end, stdout's
and stderr's read ends); the child ends go to the OCI runtime, whose container inherits
them, and are closed here once the runtime has been started. A terminal process has one
pty master instead (`pykata.agent.terminal`), read as stdout and written as stdin.
A read is a long poll: it parks on the loop until the fd is readable, so a ReadStdout
never holds up other calls. Knows nothing of containers.
"""

from __future__ import annotations

import asyncio
import errno
import os

MAX_READ = 1 << 20


class _PipeEnd:
    """One non-blocking pipe fd, parked on the event loop while it is not ready."""

    def __init__(self, fd: int, writer: bool) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._writer = writer
        self._lock = asyncio.Lock()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    async def _ready(self) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        (loop.add_writer if self._writer else loop.add_reader)(self._fd, _wake, self._waiter)
        try:
            await self._waiter
        finally:
            if not self.closed:
                self._unwatch(loop)
            self._waiter = None

    def _unwatch(self, loop: asyncio.AbstractEventLoop) -> None:
        (loop.remove_writer if self._writer else loop.remove_reader)(self._fd)

    def close_now(self) -> None:
        """Closes at once; a read in progress returns b"", a write raises BrokenPipeError."""
        if self.closed:
            return
        self.closed = True
        if self._waiter is not None:
            self._unwatch(asyncio.get_running_loop())
            _wake(self._waiter)
        os.close(self._fd)


class PipeReader(_PipeEnd):
    def __init__(self, fd: int) -> None:
        super().__init__(fd, writer=False)

    async def read(self, size: int) -> bytes:
        """Up to size bytes; b"" once every writer has closed (or the reader has)."""
        async with self._lock:  # one reader at a time keeps byte order
            while not self.closed:
                try:
                    return os.read(self._fd, min(size, MAX_READ))
                except BlockingIOError:
                    await self._ready()
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise
                    return b""  # a pty master whose terminal every process has closed
            return b""

    def close(self) -> None:
        self.close_now()


class PipeWriter(_PipeEnd):
    def __init__(self, fd: int) -> None:
        super().__init__(fd, writer=True)

    async def write(self, data: bytes) -> int:
        """Writes all of data (waiting for room); raises BrokenPipeError if nobody reads."""
        async with self._lock:
            view = memoryview(data)
            while view and not self.closed:
                try:
                    view = view[os.write(self._fd, view):]
                except BlockingIOError:
                    await self._ready()
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise
                    raise BrokenPipeError(errno.EPIPE, "the terminal was hung up") from None
            if view:
                raise BrokenPipeError(32, "stdin was closed")
            return len(data)

    async def close(self) -> None:
        """Closes after writes in progress, so the reader sees all data, then EOF."""
        async with self._lock:
            self.close_now()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class EmptyReader:
    """The stderr of a terminal process: the terminal carries both streams."""

    closed = True

    async def read(self, size: int) -> bytes:
        return b""

    def close(self) -> None:
        pass


class ProcessStdio:
    """What the agent holds of a process's stdio. `child_fds` go to the runtime, then
    `release_child_fds()`. `tty` is the pty master of a terminal process (stdout owns it;
    stdin writes to a duplicate of it), else None."""

    def __init__(self, stdin: PipeWriter, stdout: PipeReader, stderr: PipeReader | EmptyReader,
                 child_fds: tuple[int, ...] = (), tty: int | None = None) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.child_fds = child_fds
        self.tty = tty

    def release_child_fds(self) -> None:
        for fd in self.child_fds:
            os.close(fd)
        self.child_fds = ()

    def close(self) -> None:
        """Drops everything at once (container removal); readers get b""."""
        self.release_child_fds()
        self.stdout.close()
        self.stderr.close()
        self.stdin.close_now()


def pipe_stdio() -> ProcessStdio:
    """Three pipes; the child ends are stdin's read end, stdout's and stderr's write ends."""
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    return ProcessStdio(PipeWriter(stdin_w), PipeReader(stdout_r), PipeReader(stderr_r),
                        (stdin_r, stdout_w, stderr_w))
