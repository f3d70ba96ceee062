"""CPU and NUMA node sets in the kernel's list format ("0-3,8"): parse, format, compare.

Pure. Parsing is strict and bounded: ids above MAX_ID are refused, so hostile text such as
"0-4294967295" cannot make us build a huge set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pykata.domain.errors import CpuSetError

# Linux's largest NR_CPUS is 8192 (and MAX_NUMNODES is smaller); anything above is a typo.
MAX_ID = 8191
_MAX_DIGITS = len(str(MAX_ID))


class CpuSet:
    """An immutable set of CPU (or NUMA node) ids. str() gives the canonical list form."""

    __slots__ = ("_ids",)

    def __init__(self, ids: Iterable[int] = ()) -> None:
        found = frozenset(ids)
        for i in found:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= MAX_ID:
                raise CpuSetError(repr(i), f"ids must be integers 0-{MAX_ID}")
        self._ids = found

    @classmethod
    def parse(cls, text: str) -> CpuSet:
        """Kernel list format: "" (empty), "3", "0-3", "0-3,8,10-11"; whitespace around ok."""
        body = text.strip()
        if not body:
            return cls()
        ids: set[int] = set()
        for item in body.split(","):
            first, dash, last = item.strip().partition("-")
            lo = _number(first, text)
            hi = _number(last, text) if dash else lo
            if hi < lo:
                raise CpuSetError(text, f"range {item.strip()!r} runs backwards")
            ids.update(range(lo, hi + 1))
        return cls(ids)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._ids))

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CpuSet) and self._ids == other._ids

    def __hash__(self) -> int:
        return hash(self._ids)

    def __le__(self, other: CpuSet) -> bool:
        return self._ids <= other._ids

    def __or__(self, other: CpuSet) -> CpuSet:
        return CpuSet(self._ids | other._ids)

    def __and__(self, other: CpuSet) -> CpuSet:
        return CpuSet(self._ids & other._ids)

    def __sub__(self, other: CpuSet) -> CpuSet:
        return CpuSet(self._ids - other._ids)

    def __str__(self) -> str:
        parts: list[str] = []
        run: list[int] = []
        for i in self:
            if run and i != run[-1] + 1:
                parts.append(_span(run))
                run = []
            run.append(i)
        if run:
            parts.append(_span(run))
        return ",".join(parts)

    def __repr__(self) -> str:
        return f"CpuSet({str(self)!r})"


def _span(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


def _number(part: str, text: str) -> int:
    part = part.strip()
    # isascii: str.isdigit() also accepts digits such as '²' that int() rejects.
    if not (part.isascii() and part.isdigit()):
        raise CpuSetError(text, f"{part!r} is not a number")
    if len(part.lstrip("0")) > _MAX_DIGITS or int(part) > MAX_ID:
        raise CpuSetError(text, f"{part} is above the largest id, {MAX_ID}")
    return int(part)
