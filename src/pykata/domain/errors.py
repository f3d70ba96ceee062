"""The error hierarchy. One root, subclasses carry data, messages name the bad thing."""

from __future__ import annotations

from collections.abc import Sequence


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


def shown(value: object, limit: int = 80) -> str:
    """repr() cut to `limit` characters: a hostile value must not flood a log or a reply."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


# was in pykata/sandbox/inspect.py
class InspectError(PykataError):
    """No such running sandbox, or it could not be read."""


# was in pykata/agent/runtime.py
class RuntimeFailed(PykataError):
    """The runtime binary exited non-zero; detail is what it logged."""

    def __init__(self, argv: Sequence[str], code: int, detail: str) -> None:
        self.argv, self.code, self.detail = list(argv), code, detail
        verb = " ".join(argv[-2:]) if argv else "?"
        super().__init__(f"{argv[0].rsplit('/', 1)[-1]} ...{verb} exited {code}: {detail}")


# was in pykata/agent/registry.py
class BadValue(PykataError):
    def __init__(self, key: str, value: object, why: str) -> None:
        self.key, self.value, self.why = key, value, why
        super().__init__(f"{key} = {value!r}: {why}")


# was in pykata/agent/registry.py
class DuplicateId(PykataError):
    def __init__(self, kind: str, ident: str, where: str = "") -> None:
        self.kind, self.ident = kind, ident
        super().__init__(f"{kind} {ident!r} already exists" + (f" in {where}" if where else ""))


# was in pykata/agent/registry.py
class UnknownId(PykataError):
    def __init__(self, kind: str, ident: str, where: str = "") -> None:
        self.kind, self.ident = kind, ident
        super().__init__(f"no {kind} {ident!r}" + (f" in {where}" if where else ""))


# was in pykata/agent/cgroups.py
class NoCgroup2(StateError):
    """The container's cgroups are v1 (a v1 or hybrid host): no v2 statistics."""

    def __init__(self, what: str) -> None:
        self.what, self.state, self.required = what, "cgroup v1", "cgroup v2"
        Exception.__init__(self, f"{what}: the container is in cgroup v1 hierarchies (a v1 "
                           "or hybrid host); cgroup statistics need cgroup v2 alone")


# was in pykata/plan/hotplug.py
class HotplugError(PykataError):
    """A resize cannot be planned: no free slot, no DIMM slot left, bad VM state."""


# was in pykata/plan/cgroups.py
class CgroupError(PykataError):
    """A cgroups path or value that pykata will not use; names the value and why."""

    def __init__(self, what: str, value: object, why: str) -> None:
        self.what, self.value, self.why = what, value, why
        super().__init__(f"{what} {value!r}: {why}")


# was in pykata/shim/stdio.py
class StdioError(PykataError):
    pass


# was in pykata/shim/args.py
class UsageError(PykataError):
    pass


# was in pykata/domain/ids.py
class IdError(PykataError):
    """An id that must not be used (it would escape or break the path built from it)."""

    def __init__(self, key: str, value: str, why: str) -> None:
        self.key, self.value, self.why = key, value, why
        super().__init__(f"{key} {shown(value)}: {why}")


# was in pykata/domain/annotations.py
class AnnotationError(PykataError):
    """One or more annotations were refused; `refused` holds (name, value, why)."""

    def __init__(self, refused: list[tuple[str, str, str]]) -> None:
        self.refused = tuple(refused)
        parts = [f"{shown(name)} = {shown(value)}: {why}" for name, value, why in refused]
        head = "refused annotation" if len(parts) == 1 else "refused annotations"
        super().__init__(f"{head} {'; '.join(parts)}")


# was in pykata/domain/cpuset.py
class CpuSetError(PykataError):
    """Text that is not a list of ids like "0-3,8"."""

    def __init__(self, text: str, why: str) -> None:
        self.text, self.why = text, why
        shown = text if len(text) <= 60 else text[:57] + "..."
        super().__init__(f"{shown!r}: {why}; expected a list like '0-3,8'")


# was in pykata/domain/network.py
class NetworkError(PykataError):
    """The pod network cannot be set up; names the namespace, interface or value at fault."""

    def __init__(self, subject: str, value: object, why: str) -> None:
        self.subject, self.value, self.why = subject, value, why
        super().__init__(f"{subject} {value!r}: {why}")


# was in pykata/domain/topology.py
class TopologyError(PykataError):
    """A host topology file is missing a value or holds one pykata cannot read."""

    def __init__(self, path: str, value: str, why: str) -> None:
        self.path, self.value, self.why = path, value, why
        shown = value if len(value) <= 60 else value[:57] + "..."
        super().__init__(f"{path}: {shown!r}: {why}")


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
