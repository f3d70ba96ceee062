"""vCPU thread ids from QMP query-cpus-fast: parsing and the wait for hot-plugged vCPUs."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from pykata.domain.errors import VmmError
from pykata.vmm.threads import parse_cpus_fast, vcpu_threads


def cpu(index: int, tid: int) -> dict[str, object]:
    return {"cpu-index": index, "thread-id": tid, "qom-path": f"/machine/cpu[{index}]",
            "target": "x86_64", "props": {"core-id": 0, "socket-id": index, "thread-id": 0}}


class Growing:
    """Lists one more vCPU at each call, up to `upto`."""

    def __init__(self, upto: int) -> None:
        self.upto, self.calls = upto, 0

    async def execute(self, cmd: str, arguments: Mapping[str, object] | None = None) -> object:
        assert cmd == "query-cpus-fast"
        self.calls += 1
        return [cpu(i, 100 + i) for i in range(min(self.calls, self.upto))]


def test_parse_maps_index_to_thread() -> None:
    assert parse_cpus_fast([cpu(1, 501), cpu(0, 500)]) == {0: 500, 1: 501}


@pytest.mark.parametrize("reply", [{}, [{"cpu-index": 0}], [{"cpu-index": "0", "thread-id": 5}],
                                   [{"cpu-index": 0, "thread-id": 0}]])
def test_parse_rejects_what_qemu_never_says(reply: object) -> None:
    with pytest.raises(VmmError, match="query-cpus-fast: unexpected reply"):
        parse_cpus_fast(reply)


def test_waits_until_every_vcpu_is_listed() -> None:
    qmp = Growing(3)
    assert asyncio.run(vcpu_threads(qmp, 3, first_delay=0.001)) == {0: 100, 1: 101, 2: 102}
    assert qmp.calls == 3


def test_gives_up_naming_the_count() -> None:
    with pytest.raises(VmmError, match="1 of 2 vCPUs listed after 0.05 s"):
        asyncio.run(vcpu_threads(Growing(1), 2, timeout=0.05, first_delay=0.001))
