"""Byte vectors for the sans-IO ttrpc codec (FACTS.md section 3)."""

from __future__ import annotations

import struct
import tracemalloc

import pytest

from pykata.domain.errors import NOT_FOUND, ProtocolError, RpcError
from pykata.protocol import ttrpc
from pykata.protocol.pb import ttrpc_pb2
from pykata.protocol.ttrpc import (
    MAX_DATA,
    Frame,
    FrameDecoder,
    FrameType,
    OversizedFrame,
)

# KillRequest{id: "c1", signal: 9}: field 1 string "c1", field 3 varint 9, by hand.
KILL_PAYLOAD = bytes.fromhex("0a02") + b"c1" + bytes.fromhex("1809")
KILL_DATA = (
    bytes.fromhex("0a17") + b"containerd.task.v2.Task"
    + bytes.fromhex("1204") + b"Kill"
    + bytes.fromhex("1a06") + KILL_PAYLOAD
)
KILL_FRAME = bytes.fromhex("00000027" "00000031" "01" "00") + KILL_DATA
# StartResponse{pid: 4912} is 08b026; the Response wraps it as field 2 bytes.
START_PAYLOAD = bytes.fromhex("08b026")
START_DATA = bytes.fromhex("1203") + START_PAYLOAD
START_FRAME = bytes.fromhex("00000005" "00000031" "02" "00") + START_DATA


def header(length: int, stream_id: int, ftype: int, flags: int = 0) -> bytes:
    return struct.pack(">IIBB", length, stream_id, ftype, flags)


def test_kill_request_golden_bytes() -> None:
    assert len(KILL_DATA) == 0x27
    frame = ttrpc.request_frame(49, "containerd.task.v2.Task", "Kill", KILL_PAYLOAD)
    assert frame == KILL_FRAME


def test_start_response_golden_bytes() -> None:
    assert ttrpc.encode_response(START_PAYLOAD) == START_DATA
    assert ttrpc.response_frame(49, START_PAYLOAD) == START_FRAME


def test_kill_request_decodes() -> None:
    [frame] = FrameDecoder().feed(KILL_FRAME)
    assert frame == Frame(49, FrameType.REQUEST, 0, KILL_DATA)
    assert isinstance(frame, Frame)
    req = ttrpc.decode_request(frame.data)
    assert (req.service, req.method, req.payload, req.timeout_nano) == (
        "containerd.task.v2.Task", "Kill", KILL_PAYLOAD, 0,
    )


@pytest.mark.parametrize(
    "wire",
    [KILL_FRAME, START_FRAME, header(0, 7, FrameType.RESPONSE)],
    ids=["kill-request", "start-response", "empty-data"],
)
def test_one_byte_at_a_time(wire: bytes) -> None:
    decoder = FrameDecoder()
    items = [item for i in range(len(wire)) for item in decoder.feed(wire[i : i + 1])]
    assert items == FrameDecoder().feed(wire)
    assert len(items) == 1


@pytest.mark.parametrize("split", [0, 1, 9, 10, 11, 48, 49, 50], ids=lambda s: f"split{s}")
def test_several_frames_in_one_chunk_and_split_anywhere(split: int) -> None:
    wire = KILL_FRAME + START_FRAME + header(0, 51, FrameType.REQUEST)
    decoder = FrameDecoder()
    items = decoder.feed(wire[:split]) + decoder.feed(wire[split:])
    assert items == [
        Frame(49, FrameType.REQUEST, 0, KILL_DATA),
        Frame(49, FrameType.RESPONSE, 0, START_DATA),
        Frame(51, FrameType.REQUEST, 0, b""),
    ]


def test_flags_are_kept() -> None:
    assert FrameDecoder().feed(header(1, 3, 1, flags=0x80) + b"x") == [Frame(3, 1, 0x80, b"x")]


def test_oversized_frame_is_skipped_then_next_frame_decodes() -> None:
    size = MAX_DATA + 1
    decoder = FrameDecoder()
    assert decoder.feed(header(size, 5, FrameType.REQUEST)) == [
        OversizedFrame(5, FrameType.REQUEST, size)
    ]
    body = bytes(size)
    chunk = 1 << 16
    tracemalloc.start()
    try:
        for start in range(0, size - 3, chunk):
            assert decoder.feed(body[start : min(start + chunk, size - 3)]) == []
        # the last 3 data bytes share a chunk with the next frame
        items = decoder.feed(body[size - 3 :] + KILL_FRAME)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert items == [Frame(49, FrameType.REQUEST, 0, KILL_DATA)]
    assert peak < 4 * chunk, f"decoder buffered the skipped data (peak {peak} bytes)"


def test_frame_of_exactly_max_data_is_accepted() -> None:
    data = b"\x01" * MAX_DATA
    wire = ttrpc.encode_frame(Frame(9, FrameType.RESPONSE, 0, data))
    assert FrameDecoder().feed(wire) == [Frame(9, FrameType.RESPONSE, 0, data)]


@pytest.mark.parametrize("ftype", [0, 3, 255], ids=["zero", "data-frame", "ff"])
def test_unknown_frame_type_is_a_protocol_error(ftype: int) -> None:
    with pytest.raises(ProtocolError, match=f"stream 7: unknown type {ftype}"):
        FrameDecoder().feed(header(2, 7, ftype) + b"ab")


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (Frame(1, 1, 0, bytes(MAX_DATA + 1)), "4194305 bytes exceeds"),
        (Frame(1 << 32, 1, 0, b""), "stream id 4294967296"),
        (Frame(1, 256, 0, b""), "type 256"),
        (Frame(1, 1, -1, b""), "flags -1"),
    ],
    ids=["too-big", "stream-id", "type", "flags"],
)
def test_encode_frame_rejects(frame: Frame, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        ttrpc.encode_frame(frame)


def test_request_too_big_for_one_frame() -> None:
    with pytest.raises(ProtocolError, match="exceeds the ttrpc limit"):
        ttrpc.request_frame(1, "s", "m", bytes(MAX_DATA))


@pytest.mark.parametrize(
    "data",
    [bytes.fromhex("0a05") + b"ab", b"\xff", bytes.fromhex("0a02fffe")],
    ids=["truncated-string", "bad-tag", "bad-utf8"],
)
def test_malformed_protobuf_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed ttrpc request"):
        ttrpc.decode_request(data)
    with pytest.raises(ProtocolError, match="malformed ttrpc response"):
        ttrpc.decode_response(data)


def test_request_timeout_round_trips() -> None:
    req = ttrpc.decode_request(ttrpc.encode_request("s", "m", b"p", timeout_nano=1500))
    assert (req.service, req.method, req.payload, req.timeout_nano) == ("s", "m", b"p", 1500)


@pytest.mark.parametrize(
    ("resp", "expected"),
    [
        (ttrpc_pb2.Response(payload=b"ok"), b"ok"),
        (ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=0), payload=b"ok"), b"ok"),
        (ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=NOT_FOUND, message="no c9")), None),
    ],
    ids=["no-status", "status-ok", "not-found"],
)
def test_response_payload(resp: ttrpc_pb2.Response, expected: bytes | None) -> None:
    if expected is not None:
        assert ttrpc.response_payload("/s/m", resp) == expected
        return
    with pytest.raises(RpcError, match="/s/m: NOT_FOUND: no c9") as info:
        ttrpc.response_payload("/s/m", resp)
    assert info.value.code == NOT_FOUND


def test_error_response_round_trips() -> None:
    resp = ttrpc.decode_response(ttrpc.encode_response(code=NOT_FOUND, message="no c9"))
    assert (resp.status.code, resp.status.message, resp.payload) == (NOT_FOUND, "no c9", b"")
