"""One-line messages to the console (stderr: ttyS0 in the guest), and the crash path.

No logging module: it costs milliseconds to import, many times that under TCG.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

# Boot timeline (seconds since guest boot), reported by GetGuestDetails for benchmarks.
MARKS: dict[str, float] = {}


def mark(name: str, message: str) -> None:
    MARKS[name] = time.monotonic()
    log(message)


def log(message: str) -> None:
    # CLOCK_MONOTONIC: in the guest, seconds since boot, like the kernel's own timestamps.
    line = f"pykata-agent [{time.monotonic():.3f}]: {message}\n"
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # no usable stderr (no console yet)
        write_console(line)


def write_console(text: str) -> None:
    """Best effort, straight to the device: used when sys.stderr may be gone."""
    data = text.encode(errors="replace")
    for path in ("/dev/console", "/dev/ttyS0"):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
        except OSError:
            continue
        try:
            os.write(fd, data)
            return
        except OSError:
            continue
        finally:
            os.close(fd)
    with contextlib.suppress(OSError):
        os.write(2, data)
