"""CRI port-forward into the VM: dials to localhost:<any port> in the pod's network
namespace on the host reach localhost:<port> in the guest.

containerd's PortForward dials localhost in the pod's namespace on the host, where nothing
of the pod runs. The forwarder listens there on one port, nft redirects every TCP
connection to loopback onto it (`pykata.plan.portforward`), and each accepted connection
becomes an agent stream to the port it dialled. Both directions are relayed at once; an
end of file is passed on as a half-close, and the stream is closed on both sides once both
directions ended or either failed. Stopping the forwarder closes every stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from pykata.domain.errors import PykataError
from pykata.host import portforward as host
from pykata.plan.portforward import port_redirect_removal, port_redirect_ruleset
from pykata.sandbox.agent_client import AgentClient
from pykata.sandbox.leftovers import PORTFORWARD_RECORD

log = logging.getLogger(__name__)

CHUNK = 1 << 16
class PortForwarder:
    def __init__(self, agent: AgentClient, netns: str, sandbox_id: str,
                 state_dir: str) -> None:
        self.agent, self.netns, self.sandbox_id = agent, netns, sandbox_id
        self.state_dir = state_dir
        self.port = 0
        self._servers: list[asyncio.Server] = []
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Listens and redirects; `stack` undoes both (and ends every stream)."""
        socks = await asyncio.to_thread(host.open_listeners, self.netns)
        try:
            for sock in socks:
                self._servers.append(await asyncio.start_server(self._accept, sock=sock))
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        finally:
            stack.push_async_callback(self.stop)
        self.port = socks[0].getsockname()[1]
        with open(os.path.join(self.state_dir, PORTFORWARD_RECORD), "w") as f:
            f.write(self.netns)
        await asyncio.to_thread(host.apply_nft, self.netns,
                                port_redirect_ruleset(self.port, len(socks) > 1))
        stack.push_async_callback(self._unredirect)
        log.info("sandbox %s: port-forward from localhost in %s via port %d", self.sandbox_id,
                 self.netns, self.port)

    async def _unredirect(self) -> None:
        try:
            await asyncio.to_thread(host.apply_nft, self.netns, port_redirect_removal())
        except PykataError as exc:  # the namespace went first (the pod's removal): so did it
            log.debug("sandbox %s: port-forward redirect: %s", self.sandbox_id, exc)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            await self._forward(reader, writer)
        finally:
            self._relays.discard(task)
            writer.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        try:
            port = host.original_port(sock)
            sid = await self.agent.port_forward_open(port)
        except (PykataError, OSError) as exc:
            log.warning("sandbox %s: port-forward: %s", self.sandbox_id, exc)
            return
        pumps = [asyncio.ensure_future(self._to_guest(reader, sid)),
                 asyncio.ensure_future(self._to_host(writer, sid))]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t.exception() for t in done if t.exception() is not None]
            if failed:
                log.info("sandbox %s: port-forward to port %d ended: %s", self.sandbox_id,
                         port, failed[0])
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            with contextlib.suppress(PykataError, OSError):
                await self.agent.port_forward_close(sid)

    async def _to_guest(self, reader: asyncio.StreamReader, sid: int) -> None:
        while data := await reader.read(CHUNK):
            while data:
                data = data[await self.agent.port_forward_write(sid, data):]
        await self.agent.port_forward_close(sid, write_only=True)

    async def _to_host(self, writer: asyncio.StreamWriter, sid: int) -> None:
        while data := await self.agent.port_forward_read(sid):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
