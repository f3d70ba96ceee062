"""Property tests: hostile input to the parsers raises only pykata's own errors.

Each test runs a bounded number of examples (stated in its @settings) so CI time is
predictable; raise max_examples locally to search harder.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pykata.domain.annotations import PREFIX, apply_annotations
from pykata.domain.config import Config, build_config, keys, parse_toml, to_document
from pykata.domain.config_docs import dump_toml
from pykata.domain.cpuset import MAX_ID, CpuSet
from pykata.domain.errors import AnnotationError, ConfigError, CpuSetError, ProtocolError, SpecError
from pykata.domain.spec import default_spec, parse_spec
from pykata.protocol.ttrpc import (
    Frame,
    FrameDecoder,
    OversizedFrame,
    decode_request,
    decode_response,
    encode_frame,
    request_frame,
)

# Byte and text parsers are cheap per example; structured documents cost more to generate.
# database=None: nothing is written into the source tree; a failure prints its example.
# Derandomized, so CI runs the same examples every time (a landing must not hinge on luck);
# PYKATA_FUZZ_RANDOM=1 explores new ones.
_DERANDOMIZE = not os.environ.get("PYKATA_FUZZ_RANDOM")
FUZZ_BYTES = settings(max_examples=200, deadline=None, database=None,
                      derandomize=_DERANDOMIZE)
FUZZ = settings(max_examples=100, deadline=None, database=None, derandomize=_DERANDOMIZE,
                suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)

# ---- ttrpc --------------------------------------------------------------------------------


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@FUZZ_BYTES
@given(st.binary(max_size=2048), st.lists(st.integers(0, 4096), max_size=8))
def test_frame_decoder_takes_any_bytes(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder()
    try:
        for chunk in _chunks(data, cuts):
            for item in decoder.feed(chunk):
                assert isinstance(item, Frame | OversizedFrame)
    except ProtocolError:
        pass


frames = st.builds(Frame, st.integers(0, 2**32 - 1), st.sampled_from([1, 2]),
                   st.integers(0, 255), st.binary(max_size=512))


@FUZZ
@given(st.lists(frames, max_size=6), st.lists(st.integers(0, 4096), max_size=8))
def test_frames_survive_any_chunking(sent: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(f) for f in sent)
    decoder = FrameDecoder()
    got = [item for chunk in _chunks(wire, cuts) for item in decoder.feed(chunk)]
    assert got == sent


@FUZZ_BYTES
@given(st.binary(max_size=512))
def test_envelopes_take_any_bytes(data: bytes) -> None:
    for decode in (decode_request, decode_response):
        with contextlib.suppress(ProtocolError):
            decode(data)


@FUZZ_BYTES
@given(st.binary(max_size=256), st.integers(0, 300), st.integers(0, 255))
def test_mutated_request_frames(payload: bytes, where: int, byte: int) -> None:
    wire = bytearray(request_frame(1, "svc", "Method", payload))
    wire[where % len(wire)] = byte
    try:
        for item in FrameDecoder().feed(bytes(wire)):
            if isinstance(item, Frame):
                decode_request(item.data)
    except ProtocolError:
        pass


# ---- cpuset -------------------------------------------------------------------------------


@FUZZ_BYTES
@given(st.text(alphabet="0123456789-, \n\t\u00b2x", max_size=40) | st.text(max_size=40))
def test_cpuset_parser_takes_any_text(text: str) -> None:
    try:
        cpus = CpuSet.parse(text)
    except CpuSetError:
        return
    assert all(0 <= i <= MAX_ID for i in cpus)
    assert CpuSet.parse(str(cpus)) == cpus


@FUZZ_BYTES
@given(st.sets(st.integers(0, MAX_ID), max_size=64))
def test_cpuset_round_trips(ids: set[int]) -> None:
    cpus = CpuSet(ids)
    assert set(CpuSet.parse(str(cpus))) == ids


# ---- configuration ------------------------------------------------------------------------

names = st.sampled_from([k.name for k in keys()]) | st.text(max_size=12)
toml_scalars = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats()
                | st.text(max_size=30) | st.sampled_from(["0", "0-1", "x", "/usr/bin/q", ""]))
toml_leaf = toml_scalars | st.lists(toml_scalars, max_size=4)


def _documents() -> st.SearchStrategy[dict[str, Any]]:
    table = st.dictionaries(names, toml_leaf, max_size=6)
    sections = st.fixed_dictionaries({}, optional={
        "hypervisor": st.fixed_dictionaries({}, optional={"qemu": table}) | toml_leaf,
        "agent": st.fixed_dictionaries({}, optional={"pykata": table}),
        "runtime": table | toml_leaf,
        "image": table,
    })
    return sections | st.dictionaries(st.text(max_size=8), toml_leaf | table, max_size=3)


@FUZZ
@given(st.lists(_documents(), max_size=3))
def test_config_builder_takes_any_documents(docs: list[dict[str, Any]]) -> None:
    try:
        cfg = build_config((f"doc{i}", d) for i, d in enumerate(docs))
    except ConfigError:
        return
    assert isinstance(cfg, Config)


@FUZZ_BYTES
@given(st.text(max_size=200) | st.lists(names, max_size=4).map(
    lambda ks: "[hypervisor.qemu]\n" + "".join(f"{k} = 1\n" for k in ks)))
def test_toml_parser_takes_any_text(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_toml(text, "fuzz.toml")


@FUZZ
@given(_documents())
def test_valid_configs_survive_a_toml_round_trip(doc: dict[str, Any]) -> None:
    try:
        cfg = build_config([("doc", doc)])
    except ConfigError:
        return
    assert build_config([("again", tomllib.loads(dump_toml(to_document(cfg))))]) == cfg


annotation_names = st.builds(
    lambda section, name: f"{PREFIX}{section}.{name}",
    st.sampled_from(["hypervisor", "runtime", "agent", "image", ""]),
    st.sampled_from([k.spec.annotation or k.name for k in keys()]) | st.text(max_size=10))


@FUZZ
@given(st.dictionaries(annotation_names | st.text(max_size=20),
                       st.text(max_size=40) | st.sampled_from(["true", "1", "64", "/usr/bin/x"]),
                       max_size=5),
       st.booleans())
def test_annotations_take_any_values(annotations: dict[str, str], open_door: bool) -> None:
    cfg = build_config([("admin", {"hypervisor": {"qemu": {
        "enable_annotations": [".*"] if open_door else [],
        "valid_hypervisor_paths": ["/usr/bin/*"]}}})])
    with contextlib.suppress(AnnotationError):
        apply_annotations(cfg, annotations)


# ---- OCI spec -----------------------------------------------------------------------------

spec_like = st.fixed_dictionaries({}, optional={
    "root": st.fixed_dictionaries({}, optional={"path": json_values, "readonly": json_values})
    | json_values,
    "process": st.fixed_dictionaries({}, optional={
        "args": json_values | st.lists(st.text(max_size=5), max_size=3),
        "env": json_values | st.lists(st.text(max_size=5), max_size=3),
        "cwd": json_values | st.sampled_from(["/", "rel"]),
        "user": st.fixed_dictionaries({}, optional={
            "uid": json_values, "gid": json_values, "additionalGids": json_values})
        | json_values,
        "terminal": json_values,
    }) | json_values,
    "hostname": json_values,
})


@FUZZ
@given(spec_like | json_values)
def test_spec_reader_takes_any_json(doc: Any) -> None:
    with contextlib.suppress(SpecError):
        parse_spec(doc, "fuzz.json")


# Every field the reader looks at, so each one meets hostile values often.
spec_fields = st.sampled_from([
    ((), "process"), ((), "root"), ((), "hostname"), (("root",), "path"),
    (("root",), "readonly"), (("process",), "args"), (("process",), "env"),
    (("process",), "cwd"), (("process",), "user"), (("process",), "terminal"),
    (("process", "user"), "uid"), (("process", "user"), "gid"),
    (("process", "user"), "additionalGids"),
])


@FUZZ
@given(spec_fields, json_values)
def test_spec_reader_with_one_field_replaced(field: tuple[tuple[str, ...], str],
                                            value: Any) -> None:
    doc = default_spec(["sh"])
    table = doc
    for part in field[0]:
        table = table[part]
    table[field[1]] = value
    with contextlib.suppress(SpecError):
        parse_spec(doc, "fuzz.json")
