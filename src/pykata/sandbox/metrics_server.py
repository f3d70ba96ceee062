"""The guest's metrics, served to `pykata monitor` by the process that owns the sandbox.

The owner (the shim, or `pykata run`) holds the only connection to the agent, so it answers
on `metrics.sock` in the sandbox's state directory: each connection gets one JSON document,
the guest's /proc files from the agent (GetMetrics) and the owner's own figures (its time
to ready, its resizes), then the socket closes. An agent that does not answer within
ANSWER_S gets an `error` instead of the guest's files; the monitor counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

from pykata.domain.errors import PykataError
from pykata.sandbox.agent_client import AgentClient

METRICS_SOCKET = "metrics.sock"
ANSWER_S = 5.0


async def serve_metrics(stack: contextlib.AsyncExitStack, agent: AgentClient,
                        state_dir: str, figures: Callable[[], dict[str, Any]]) -> None:
    """Serve until `stack` closes; the socket file goes with it. `figures`: the owner's
    own, as they are at each request."""
    path = os.path.join(state_dir, METRICS_SOCKET)

    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        doc: dict[str, Any] = {"owner": figures()}
        try:
            doc["guest"] = await asyncio.wait_for(agent.metrics_files(), ANSWER_S)
        except (PykataError, OSError, TimeoutError) as exc:
            doc["error"] = f"agent GetMetrics: {exc or 'no answer'}"
        with contextlib.suppress(OSError):
            writer.write(json.dumps(doc).encode())
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(answer, path)
    stack.push_async_callback(_close, server, path)


async def _close(server: asyncio.Server, path: str) -> None:
    server.close()
    await server.wait_closed()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
