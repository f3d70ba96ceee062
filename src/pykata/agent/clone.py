"""What a VM cloned from a template needs before it serves a pod: fresh entropy and the
host's clock. Every clone resumes with the template's RNG state and wall clock; without
these, two clones draw the same random bytes (Debian's cloud kernel has no VMGENID).

Runs only inside the VM: the ioctls and clock_settime need the guest's root.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time

from pykata.domain.errors import BadValue

# linux/random.h: _IOW('R', 0x03, int[2]) and _IO('R', 0x07).
RNDADDENTROPY = 0x40085203
RNDRESEEDCRNG = 0x5207
MIN_ENTROPY_BYTES = 32   # a full reseed of the CRNG's 256-bit key
MAX_ENTROPY_BYTES = 4096


def entropy_ioctl_arg(data: bytes) -> bytes:
    """struct rand_pool_info: entropy_count (bits credited), buf_size (bytes), buf."""
    if not MIN_ENTROPY_BYTES <= len(data) <= MAX_ENTROPY_BYTES:
        raise BadValue("reseed data length", len(data),
                       f"must be {MIN_ENTROPY_BYTES}-{MAX_ENTROPY_BYTES} bytes")
    return struct.pack("ii", 8 * len(data), len(data)) + data


def reseed(data: bytes, device: str = "/dev/random") -> None:
    arg = entropy_ioctl_arg(data)
    fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, arg)
        fcntl.ioctl(fd, RNDRESEEDCRNG)
    finally:
        os.close(fd)


def set_clock(sec: int, usec: int) -> None:
    if sec <= 0 or not 0 <= usec < 1_000_000:
        raise BadValue("guest time", f"{sec}.{usec:06d}", "must be a time after 1970")
    time.clock_settime(time.CLOCK_REALTIME, sec + usec / 1e6)
