"""The one rule for sandbox, container and exec ids, checked before an id becomes a path.

Used by the host (sandbox state dirs, shared rootfs mounts) and by the guest agent (bundle
and exec files), so both sides refuse the same ids. Pure; stdlib `re` only (the agent
imports this at boot).
"""

from __future__ import annotations

import re

from pykata.domain.errors import IdError

MAX_ID_LEN = 128
# ASCII letters and digits, then also "_.+-": never "/", NUL, whitespace or a leading dot.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")
RULE = f"1-{MAX_ID_LEN} of [A-Za-z0-9_.+-], starting with a letter or digit, no '..'"


def id_problem(value: object) -> str | None:
    """Why `value` is not a valid id, or None when it is."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_LEN:
        return f"{len(value)} characters, more than {MAX_ID_LEN}"
    if not _ID.match(value) or ".." in value:
        return f"must be {RULE}"
    return None


def check_id(key: str, value: str) -> str:
    """`value` itself, or IdError naming `key` (e.g. "container id")."""
    why = id_problem(value)
    if why is not None:
        raise IdError(key, value, why)
    return value


