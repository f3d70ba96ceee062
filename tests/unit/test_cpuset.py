"""CpuSet: the kernel's list format, parsed strictly and bounded."""

from __future__ import annotations

import pytest

from pykata.domain.cpuset import MAX_ID, CpuSet
from pykata.domain.errors import CpuSetError


@pytest.mark.parametrize(
    ("text", "ids", "canonical"),
    [
        ("", [], ""),
        ("3", [3], "3"),
        ("0-3,8", [0, 1, 2, 3, 8], "0-3,8"),
        (" 8,0-3\n", [0, 1, 2, 3, 8], "0-3,8"),
        ("1,2,3,5", [1, 2, 3, 5], "1-3,5"),
        ("0-0", [0], "0"),
        ("007", [7], "7"),
        (f"{MAX_ID}", [MAX_ID], str(MAX_ID)),
    ],
    ids=["empty", "one", "range", "spaces-and-order", "merged", "one-range", "zeros", "max"],
)
def test_parse_and_format(text: str, ids: list[int], canonical: str) -> None:
    cpus = CpuSet.parse(text)
    assert list(cpus) == ids
    assert str(cpus) == canonical
    assert CpuSet.parse(str(cpus)) == cpus


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("x", "'x' is not a number"),
        ("1,,2", "'' is not a number"),
        ("3-1", "runs backwards"),
        ("-1", "'' is not a number"),
        ("1-", "'' is not a number"),
        ("0-4294967295", "above the largest id"),
        (f"{MAX_ID + 1}", "above the largest id"),
        ("9" * 5000, "above the largest id"),
        ("\u00b2", "is not a number"),
        ("0-7:2/4", "is not a number"),
    ],
    ids=["letter", "empty-item", "backwards", "negative", "open-range", "huge-range",
         "above-max", "huge-number", "superscript-digit", "stride"],
)
def test_bad_lists(text: str, why: str) -> None:
    with pytest.raises(CpuSetError, match=why):
        CpuSet.parse(text)


def test_set_operations() -> None:
    a, b = CpuSet.parse("0-3"), CpuSet.parse("2-5")
    assert str(a | b) == "0-5" and str(a & b) == "2-3" and str(a - b) == "0-1"
    assert CpuSet.parse("1") <= a and not b <= a
    assert 2 in a and 7 not in a and len(a) == 4
    assert {a: 1}[CpuSet([0, 1, 2, 3])] == 1
    assert repr(a) == "CpuSet('0-3')"


def test_constructor_checks_ids() -> None:
    with pytest.raises(CpuSetError):
        CpuSet([-1])
    with pytest.raises(CpuSetError):
        CpuSet([True])
