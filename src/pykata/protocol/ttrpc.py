"""Sans-IO ttrpc codec: frames to and from bytes, Request/Response envelopes.

Decides how ttrpc v1.1 (unary calls, as containerd 1.6 speaks it) looks on the wire: a
10-byte header (u32 BE data length, u32 BE stream id, u8 type, u8 flags) and at most 4 MiB
of protobuf data. It must not do I/O: no asyncio, socket or os here; the transport in
`pykata.transport.ttrpc_aio` feeds it bytes and writes out what it returns.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from google.protobuf.message import DecodeError

from pykata.domain.errors import OK, ProtocolError, RpcError
from pykata.protocol.pb import ttrpc_pb2

HEADER_LEN = 10
MAX_DATA = 4 << 20
_HEADER = struct.Struct(">IIBB")
_MAX_STREAM_ID = (1 << 32) - 1


class FrameType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2


# NamedTuples, not dataclasses: the guest agent imports this module, and a dataclass
# compiles its methods at import (tens of milliseconds each under TCG).
class Frame(NamedTuple):
    stream_id: int
    type: int
    flags: int
    data: bytes


class OversizedFrame(NamedTuple):
    """A frame whose data exceeded MAX_DATA; its data was discarded unread."""

    stream_id: int
    type: int
    length: int


def encode_frame(frame: Frame) -> bytes:
    if len(frame.data) > MAX_DATA:
        raise ProtocolError(
            f"frame on stream {frame.stream_id}: data of {len(frame.data)} bytes"
            f" exceeds the ttrpc limit of {MAX_DATA}"
        )
    if not 0 <= frame.stream_id <= _MAX_STREAM_ID:
        raise ProtocolError(f"stream id {frame.stream_id} does not fit in 32 bits")
    if not (0 <= frame.type <= 0xFF and 0 <= frame.flags <= 0xFF):
        raise ProtocolError(
            f"frame on stream {frame.stream_id}: type {frame.type} / flags {frame.flags}"
            " do not fit in a byte"
        )
    return _HEADER.pack(len(frame.data), frame.stream_id, frame.type, frame.flags) + frame.data


class _Header(NamedTuple):
    length: int
    stream_id: int
    type: int
    flags: int


def _parse_header(raw: bytes) -> _Header:
    length, stream_id, ftype, flags = _HEADER.unpack(raw)
    if ftype not in (FrameType.REQUEST, FrameType.RESPONSE):
        # ttrpc v1.2 data frames (type 3) belong to streaming calls, which we never offer.
        raise ProtocolError(
            f"frame on stream {stream_id}: unknown type {ftype} (expected 1 request or 2"
            f" response); header {raw.hex()}"
        )
    return _Header(length, stream_id, ftype, flags)


class FrameDecoder:
    """Turns byte chunks of any size into frames.

    An oversized frame is reported as soon as its header arrives and its data is dropped
    as it streams in, so a hostile peer cannot make us buffer more than one chunk of it.
    After a ProtocolError the byte stream has lost sync: close the connection.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: _Header | None = None
        self._skip = 0

    def feed(self, data: bytes) -> list[Frame | OversizedFrame]:
        out: list[Frame | OversizedFrame] = []
        view = memoryview(data)
        while view:
            view = self._consume(view, out)
        return out

    def _consume(self, view: memoryview, out: list[Frame | OversizedFrame]) -> memoryview:
        if self._skip:
            n = min(self._skip, len(view))
            self._skip -= n
            return view[n:]
        want = HEADER_LEN if self._head is None else self._head.length
        n = want - len(self._buf)
        self._buf += view[:n]
        if len(self._buf) == want:
            self._advance(out)
        return view[n:]

    def _advance(self, out: list[Frame | OversizedFrame]) -> None:
        raw = bytes(self._buf)
        self._buf.clear()
        head = self._head
        if head is not None:
            self._head = None
            out.append(Frame(head.stream_id, head.type, head.flags, raw))
            return
        head = _parse_header(raw)
        if head.length > MAX_DATA:
            self._skip = head.length
            out.append(OversizedFrame(head.stream_id, head.type, head.length))
        elif head.length == 0:
            out.append(Frame(head.stream_id, head.type, head.flags, b""))
        else:
            self._head = head


def encode_request(
    service: str, method: str, payload: bytes, timeout_nano: int = 0
) -> bytes:
    req = ttrpc_pb2.Request(
        service=service, method=method, payload=payload, timeout_nano=timeout_nano
    )
    return req.SerializeToString()


def decode_request(data: bytes) -> ttrpc_pb2.Request:
    req = ttrpc_pb2.Request()
    _parse(req, data, "request")
    return req


def encode_response(payload: bytes = b"", code: int = OK, message: str = "") -> bytes:
    # ttrpc leaves status out on success; containerd reads a missing status as OK.
    resp = ttrpc_pb2.Response(payload=payload)
    if code != OK:
        resp.status.code = code
        resp.status.message = message
    return resp.SerializeToString()


def decode_response(data: bytes) -> ttrpc_pb2.Response:
    resp = ttrpc_pb2.Response()
    _parse(resp, data, "response")
    return resp


def _parse(msg: ttrpc_pb2.Request | ttrpc_pb2.Response, data: bytes, what: str) -> None:
    try:
        msg.ParseFromString(data)
    # The pure-python runtime (guest) reports bad UTF-8 as UnicodeDecodeError.
    except (DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(
            f"malformed ttrpc {what} ({len(data)} bytes, starts {data[:16].hex()}): {exc}"
        ) from exc


def request_frame(
    stream_id: int, service: str, method: str, payload: bytes, timeout_nano: int = 0
) -> bytes:
    """Raises ProtocolError when the request would exceed MAX_DATA."""
    data = encode_request(service, method, payload, timeout_nano)
    return encode_frame(Frame(stream_id, FrameType.REQUEST, 0, data))


def response_frame(
    stream_id: int, payload: bytes = b"", code: int = OK, message: str = ""
) -> bytes:
    """Raises ProtocolError when the response would exceed MAX_DATA."""
    data = encode_response(payload, code, message)
    return encode_frame(Frame(stream_id, FrameType.RESPONSE, 0, data))


def response_payload(method: str, resp: ttrpc_pb2.Response) -> bytes:
    """The payload of a successful response; RpcError(method, code, message) otherwise."""
    if resp.HasField("status") and resp.status.code != OK:
        raise RpcError(method, resp.status.code, resp.status.message)
    return resp.payload
