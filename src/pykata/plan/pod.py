"""A Kubernetes Pod manifest as pykata sees it: the limits that size its VM.

Pure: takes the parsed manifest. Limits size the VM, requests do not (Kata's rule), so a
container with requests but no limits gets only the defaults: a warning says so. The pod's
workload is what Kubernetes reserves: max(largest init container, sum of the others).
Errors name the field and the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pykata.domain.errors import SpecError
from pykata.domain.limits import Limits
from pykata.plan.sizing import MIN_LIMIT_MIB

_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)\Z")
_SUFFIX: dict[str, int | Decimal] = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


@dataclass(frozen=True)
class PodWorkload:
    name: str
    workload: Limits
    warnings: tuple[str, ...]


def quantity(value: object, source: str, field: str) -> Decimal:
    """A Kubernetes resource quantity ("500m", "2", "512Mi", "1G") as a number."""
    text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    match = _QUANTITY.match(text) if isinstance(text, str) else None
    if match is None or match.group(2) not in _SUFFIX:
        raise SpecError(source, field, f"not a Kubernetes quantity: {value!r}")
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    except InvalidOperation:
        raise SpecError(source, field, f"not a Kubernetes quantity: {value!r}") from None


def _container_limits(c: Mapping[str, Any], source: str, where: str,
                      warnings: list[str]) -> Limits:
    name = c.get("name", "?")
    resources = c.get("resources") or {}
    if not isinstance(resources, Mapping):
        raise SpecError(source, f"{where}.resources", f"must be a mapping, got {resources!r}")
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    for key, part in (("limits", limits), ("requests", requests)):
        if not isinstance(part, Mapping):
            raise SpecError(source, f"{where}.resources.{key}", f"must be a mapping, got {part!r}")
    vcpus, mib, reasons = 0.0, 0, []
    if "cpu" in limits:
        vcpus = float(quantity(limits["cpu"], source, f"{where}.resources.limits.cpu"))
        reasons.append(f"container {name}: limits.cpu {limits['cpu']} = {vcpus:g} CPUs")
    if "memory" in limits:
        field = f"{where}.resources.limits.memory"
        mib = int(quantity(limits["memory"], source, field)) >> 20
        if mib < MIN_LIMIT_MIB:
            raise SpecError(source, field, f"{limits['memory']!r} ({mib} MiB) is below the "
                            f"{MIN_LIMIT_MIB} MiB a container needs in the guest")
        reasons.append(f"container {name}: limits.memory {limits['memory']} = {mib} MiB")
    for res in ("cpu", "memory"):
        if res in requests and res not in limits:
            warnings.append(f"container {name} requests {res} {requests[res]} without a limit: "
                            f"the VM gets only the default {res} for it (limits size the VM)")
    return Limits(vcpus, mib, tuple(reasons))


def plan_pod(doc: object, source: str) -> PodWorkload:
    if not isinstance(doc, Mapping) or doc.get("kind") != "Pod":
        kind = doc.get("kind") if isinstance(doc, Mapping) else type(doc).__name__
        raise SpecError(source, "kind", f"expected a Pod manifest, got kind {kind!r}")
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise SpecError(source, "spec", f"must be a mapping, got {spec!r}")
    warnings: list[str] = []
    groups = {}
    for key in ("containers", "initContainers"):
        items = spec.get(key) or []
        if not isinstance(items, list) or not all(isinstance(c, Mapping) for c in items):
            raise SpecError(source, f"spec.{key}", f"must be a list of containers, got {items!r}")
        groups[key] = [_container_limits(c, source, f"spec.{key}[{i}]", warnings)
                       for i, c in enumerate(items)]
    if not groups["containers"]:
        raise SpecError(source, "spec.containers", "a Pod needs at least one container")
    total = sum(groups["containers"], Limits())
    for init in groups["initContainers"]:
        total = Limits(max(total.vcpus, init.vcpus), max(total.memory_mib, init.memory_mib),
                       total.reasons + init.reasons)
    total = Limits(math.ceil(total.vcpus * 1000) / 1000, total.memory_mib, total.reasons)
    meta = doc.get("metadata")
    name = str(meta.get("name", "")) if isinstance(meta, Mapping) else ""
    return PodWorkload(name, total, tuple(warnings))
