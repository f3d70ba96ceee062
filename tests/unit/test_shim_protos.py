"""containerd's shim and event messages as bytes: the golden vectors of FACTS.md §3-4."""

from __future__ import annotations

from pykata.protocol import ttrpc
from pykata.protocol.pb import events_pb2 as ev
from pykata.protocol.pb import shim_pb2 as pb
from pykata.shim.events import EVENTS_SERVICE, envelope
from pykata.shim.server import TASK_SERVICE

KILL_PAYLOAD = bytes.fromhex("0a02") + b"c1" + bytes.fromhex("1809")
KILL_FRAME = (bytes.fromhex("00000027" "00000031" "01" "00")
              + bytes.fromhex("0a17") + b"containerd.task.v2.Task"
              + bytes.fromhex("1204") + b"Kill"
              + bytes.fromhex("1a06") + KILL_PAYLOAD)


def test_kill_request_is_the_golden_payload() -> None:
    assert pb.KillRequest(id="c1", signal=9).SerializeToString() == KILL_PAYLOAD


def test_kill_request_in_the_golden_frame() -> None:
    assert ttrpc.request_frame(49, TASK_SERVICE, "Kill", KILL_PAYLOAD) == KILL_FRAME
    frames = ttrpc.FrameDecoder().feed(KILL_FRAME)
    assert len(frames) == 1 and isinstance(frames[0], ttrpc.Frame)
    req = ttrpc.decode_request(frames[0].data)
    assert (req.service, req.method) == (TASK_SERVICE, "Kill")
    kill = pb.KillRequest.FromString(req.payload)
    assert (kill.id, kill.signal, kill.all, kill.exec_id) == ("c1", 9, False, "")


def test_start_response_is_the_golden_payload() -> None:
    payload = pb.StartResponse(pid=4912).SerializeToString()
    assert payload == bytes.fromhex("08b026")
    assert ttrpc.encode_response(payload) == bytes.fromhex("12" "03" "08b026")


def test_delete_response_round_trips() -> None:
    resp = pb.DeleteResponse(pid=4912, exit_status=137)
    resp.exited_at.FromNanoseconds(1_700_000_000_123_456_789)
    back = pb.DeleteResponse.FromString(resp.SerializeToString())
    assert back == resp
    assert back.exited_at.ToNanoseconds() == 1_700_000_000_123_456_789


def test_envelope_carries_the_event_under_containerds_type_url() -> None:
    exit_ = ev.TaskExit(container_id="c1", id="c1", pid=4912, exit_status=3)
    exit_.exited_at.FromNanoseconds(1_700_000_001_000_000_000)
    data = envelope("k8s.io", "/tasks/exit", exit_, 1_700_000_002.5)
    fwd = ev.ForwardRequest.FromString(data)
    env = fwd.envelope
    assert (env.namespace, env.topic) == ("k8s.io", "/tasks/exit")
    assert env.timestamp.ToNanoseconds() == 1_700_000_002_500_000_000
    assert env.event.type_url == "containerd.events.TaskExit"  # no type.googleapis.com/
    assert ev.TaskExit.FromString(env.event.value) == exit_
    assert fwd.SerializeToString() == data


def test_event_type_urls_name_containerds_messages() -> None:
    for event, name in [(ev.TaskCreate(), "TaskCreate"), (ev.TaskStart(), "TaskStart"),
                        (ev.TaskDelete(), "TaskDelete"), (ev.TaskOOM(), "TaskOOM"),
                        (ev.TaskExecAdded(), "TaskExecAdded"),
                        (ev.TaskExecStarted(), "TaskExecStarted")]:
        env = ev.ForwardRequest.FromString(envelope("ns", "/t", event, 0.0)).envelope
        assert env.event.type_url == f"containerd.events.{name}"


def test_service_names_are_containerds() -> None:
    assert pb.DESCRIPTOR.services_by_name["Task"].full_name == TASK_SERVICE
    assert EVENTS_SERVICE == "containerd.services.events.ttrpc.v1.Events"
