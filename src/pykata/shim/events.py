"""Task events forwarded to containerd, in the order they happened.

One queue, one sender: an event is sent only after every earlier one was (create < start
< exit < delete). containerd's `TTRPC_ADDRESS` serves `Events/Forward`; the connection is
made on first use and again after a failure, and an event that fails is sent again on a
new connection (containerd may be restarting) for up to a minute; then it is logged and
dropped: a task's life must not hang on containerd's event service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from google.protobuf.message import Message

from pykata.domain.errors import ProtocolError, RpcError
from pykata.protocol.pb import events_pb2
from pykata.transport.ttrpc_aio import TtrpcClient

log = logging.getLogger(__name__)

EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"
_SEND_TIMEOUT = 5.0
_RETRY_FOR = 60.0  # how long an event waits for containerd (a restart takes seconds)


def envelope(namespace: str, topic: str, event: Message, now: float) -> bytes:
    env = events_pb2.Envelope(namespace=namespace, topic=topic)
    env.timestamp.FromNanoseconds(int(now * 1e9))
    env.event.type_url = event.DESCRIPTOR.full_name  # containerd's URLs have no prefix
    env.event.value = event.SerializeToString()
    return events_pb2.ForwardRequest(envelope=env).SerializeToString()


class Publisher:
    def __init__(self, address: str, namespace: str) -> None:
        self._address, self._namespace = address, namespace
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._client: TtrpcClient | None = None
        self._sender: asyncio.Task[None] | None = None

    def publish(self, topic: str, event: Message) -> None:
        if not self._address:
            return
        self._queue.put_nowait((topic, envelope(self._namespace, topic, event, time.time())))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all())

    async def _send_all(self) -> None:
        while True:
            topic, payload = await self._queue.get()
            try:
                await self._deliver(topic, payload)
            finally:
                self._queue.task_done()

    async def _deliver(self, topic: str, payload: bytes) -> None:
        """Sends one event, reconnecting and retrying while containerd is away (it may be
        restarting: a connection from before is found dead only when used), within
        `_RETRY_FOR` seconds; then it is dropped with a warning."""
        deadline = time.monotonic() + _RETRY_FOR
        delay = 0.05
        while True:
            try:
                await self._send(payload)
                return
            except (OSError, ProtocolError, RpcError) as exc:
                await self._disconnect()
                if time.monotonic() + delay > deadline:
                    log.warning("event %s not delivered: %s", topic, exc)
                    return
                log.debug("event %s: %s; retrying", topic, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _send(self, payload: bytes) -> None:
        if self._client is None:
            self._client = await TtrpcClient.connect_unix(self._address)
        await self._client.call(EVENTS_SERVICE, "Forward", payload, _SEND_TIMEOUT)

    async def _disconnect(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def close(self, timeout: float = _SEND_TIMEOUT) -> None:
        """Deliver what is queued (within `timeout`), then stop."""
        if self._sender is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)
            self._sender.cancel()
            await asyncio.wait([self._sender])
        await self._disconnect()
