"""The error hierarchy. One root, subclasses carry data, messages name the bad thing."""

from __future__ import annotations


class PykataError(Exception):
    """Root of every error pykata raises on purpose."""


class ConfigError(PykataError):
    """A configuration value is missing, mistyped or out of range."""

    def __init__(self, source: str, key: str, value: object, why: str) -> None:
        self.source, self.key, self.value, self.why = source, key, value, why
        super().__init__(f"{source}: {key} = {value!r}: {why}")


class SpecError(PykataError):
    """An OCI spec (config.json) or process is malformed."""

    def __init__(self, source: str, key: str, why: str) -> None:
        self.source, self.key, self.why = source, key, why
        super().__init__(f"{source}: {key}: {why}")


class StateError(PykataError):
    """A lifecycle operation was asked for in a state that does not allow it."""

    def __init__(self, what: str, state: str, required: str) -> None:
        self.what, self.state, self.required = what, state, required
        super().__init__(f"{what}: state is {state}, requires {required}")


class ProtocolError(PykataError):
    """A peer broke the wire protocol (bad frame, bad message)."""


class NumaError(PykataError):
    """A NUMA placement cannot be made as configured; names the value that stops it."""

    def __init__(self, subject: str, value: object, why: str) -> None:
        self.subject, self.value, self.why = subject, value, why
        super().__init__(f"{subject} {value!r}: {why}")


class RpcError(PykataError):
    """A remote call answered with a non-OK status."""

    def __init__(self, method: str, code: int, message: str) -> None:
        self.method, self.code, self.message = method, code, message
        super().__init__(f"{method}: {code_name(code)}: {message}")


class VmmError(PykataError):
    """QEMU or virtiofsd failed to start, or died."""


class ImageError(PykataError):
    """The guest image is missing, stale, or could not be built."""


class HostError(PykataError):
    """The host lacks something pykata needs."""


class InstallError(PykataError):
    """A host file pykata would install into cannot be changed safely; it is left as it was."""

    def __init__(self, path: str, why: str) -> None:
        self.path, self.why = path, why
        super().__init__(f"{path}: {why}")


# gRPC status codes (ttrpc reuses them).
OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
ALREADY_EXISTS = 6
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

_CODE_NAMES = {
    OK: "OK", CANCELLED: "CANCELLED", UNKNOWN: "UNKNOWN",
    INVALID_ARGUMENT: "INVALID_ARGUMENT", DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
    NOT_FOUND: "NOT_FOUND", ALREADY_EXISTS: "ALREADY_EXISTS",
    RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED", FAILED_PRECONDITION: "FAILED_PRECONDITION",
    UNIMPLEMENTED: "UNIMPLEMENTED", INTERNAL: "INTERNAL", UNAVAILABLE: "UNAVAILABLE",
}


def code_name(code: int) -> str:
    return _CODE_NAMES.get(code, f"code {code}")
