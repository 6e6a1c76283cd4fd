"""Property-based tests: the twins encode byte-identically, each decodes the other's output, every
packet round-trips, and no input bytes make either twin raise anything but MalformedPacket (they
also agree on what they accept and what it decodes to).

Packets are generated as ``Spec`` trees (class name + arguments) and built with each twin's own
classes, so one example exercises both. Bounded to a few hundred examples per test; run
``HYPOTHESIS_PROFILE=thorough pytest tests/test_codec_hypothesis.py`` for a longer search.
"""
from __future__ import annotations

from typing import Any, List, Tuple

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import mqttfast._codec_py as _PY  # the reference twin encodes the seeds that mutated() damages
from mqttfast.constants import (
    MAX_REMAINING_LENGTH,
    V5_REASON_CODES,
    V31_SUBACK_CODES,
    V311_SUBACK_CODES,
)
from mqttfast.constants import PacketType as P
from mqttfast.errors import MalformedPacket
from mqttfast.properties import BINARY, BYTE, PAIR, PROPERTIES, STRING, U16, U32, VARINT, WILL
from mqttfast.wire import filter_error

# max_examples comes from the profile loaded in conftest.py (300; "thorough": 10,000).
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Spec:
    """A packet (or Will/Subscription) to build from either twin: ``Spec("Publish", "t", b"")``."""

    def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.name, self.args, self.kwargs = name, args, kwargs

    def build(self, m: Any) -> Any:
        def conv(v: Any) -> Any:
            if isinstance(v, Spec):
                return v.build(m)
            if isinstance(v, list):
                return [conv(x) for x in v]
            return v
        return getattr(m, self.name)(*[conv(a) for a in self.args],
                                     **{k: conv(v) for k, v in self.kwargs.items()})

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"


# --------------------------------------------------------------------------- primitives

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=12)
topic_char = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#")
topics = st.text(topic_char, min_size=1, max_size=30)
level = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#/"),
                max_size=6)
u16_id = st.integers(1, 0xFFFF)


@st.composite
def topic_filters(draw: Any) -> str:
    levels = draw(st.lists(st.one_of(level, st.just("+")), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    result = "/".join(levels)
    if draw(st.integers(0, 9)) == 0:
        result = "$share/" + draw(st.text(st.characters(
            blacklist_categories=("Cs",), blacklist_characters="\x00+#/"),
            min_size=1, max_size=5)) + "/" + result
    assume(not filter_error(result))
    return result


def _value_strategy(prop: Any, packet_type: int) -> Any:
    kind = prop.kind
    if prop.boolean:
        return st.integers(0, 1)
    low = 1 if prop.nonzero else 0
    if kind == BYTE:
        return st.integers(low, 0xFF)
    if kind == U16:
        return st.integers(low, 0xFFFF)
    if kind == U32:
        return st.integers(low, 0xFFFFFFFF)
    if kind == VARINT:
        ident = st.integers(low, MAX_REMAINING_LENGTH)
        return st.lists(ident, min_size=1, max_size=3) if packet_type == P.PUBLISH else ident
    if kind == STRING:
        return text
    if kind == BINARY:
        return st.binary(max_size=12)
    assert kind == PAIR
    return st.lists(st.tuples(text, text), min_size=1, max_size=3)


def properties_for(packet_type: int) -> Any:
    """Any property dict allowed on ``packet_type`` (None when empty), per the shared table."""
    allowed = {p.name: _value_strategy(p, packet_type) for p in PROPERTIES
               if packet_type in p.packets}
    return st.fixed_dictionaries({}, optional=allowed).map(lambda d: d or None)


def maybe_props(protocol: int, packet_type: int) -> Any:
    return properties_for(packet_type) if protocol == 5 else st.none()


protocols = st.sampled_from([3, 4, 5])


# --------------------------------------------------------------------------- packets

@st.composite
def publishes(draw: Any, protocol: int) -> Spec:
    qos = draw(st.integers(0, 2))
    props = draw(maybe_props(protocol, P.PUBLISH))
    topic = draw(topics)
    if props and "topic_alias" in props and draw(st.booleans()):
        topic = ""  # MQTT 5: the alias stands for the topic
    return Spec("Publish", topic, draw(st.binary(max_size=200)), qos,
                draw(u16_id) if qos else 0, draw(st.booleans()),
                draw(st.booleans()) if qos else False, properties=props)


@st.composite
def acks(draw: Any, protocol: int) -> Spec:
    kind = draw(st.sampled_from([P.PUBACK, P.PUBREC, P.PUBREL, P.PUBCOMP]))
    name = {P.PUBACK: "PubAck", P.PUBREC: "PubRec", P.PUBREL: "PubRel", P.PUBCOMP: "PubComp"}[kind]
    if protocol != 5:
        return Spec(name, draw(u16_id))
    return Spec(name, draw(u16_id), draw(st.sampled_from(sorted(V5_REASON_CODES[kind]))),
                draw(properties_for(kind)))


@st.composite
def connects(draw: Any, protocol: int) -> Spec:
    if protocol == 3:
        client_id = draw(st.text(st.characters(blacklist_categories=("Cs",),
                                               blacklist_characters="\x00"),
                                 min_size=1, max_size=23))
    else:
        client_id = draw(text)
    will = None
    if draw(st.booleans()):
        will = Spec("Will", draw(topics), draw(st.binary(max_size=30)), draw(st.integers(0, 2)),
                    draw(st.booleans()), draw(maybe_props(protocol, WILL)))
    username = draw(st.one_of(st.none(), text))
    password = draw(st.one_of(st.none(), st.binary(max_size=12)))
    if username is None and protocol != 5:
        password = None
    return Spec("Connect", client_id, protocol, draw(st.booleans()), draw(st.integers(0, 0xFFFF)),
                username, password, will, draw(maybe_props(protocol, P.CONNECT)))


@st.composite
def connacks(draw: Any, protocol: int) -> Spec:
    codes = sorted(V5_REASON_CODES[P.CONNACK]) if protocol == 5 else [0, 1, 2, 3, 4, 5]
    return Spec("ConnAck", protocol != 3 and draw(st.booleans()), draw(st.sampled_from(codes)),
                draw(maybe_props(protocol, P.CONNACK)))


@st.composite
def subscriptions(draw: Any, protocol: int) -> Spec:
    topic = draw(topic_filters())
    qos = draw(st.integers(0, 2))
    if protocol != 5:
        return Spec("Subscription", topic, qos)
    return Spec("Subscription", topic, qos,
                not topic.startswith("$share/") and draw(st.booleans()),
                draw(st.booleans()), draw(st.integers(0, 2)))


@st.composite
def subscribes(draw: Any, protocol: int) -> Spec:
    return Spec("Subscribe", draw(u16_id),
                draw(st.lists(subscriptions(protocol), min_size=1, max_size=4)),
                draw(maybe_props(protocol, P.SUBSCRIBE)))


@st.composite
def subacks(draw: Any, protocol: int) -> Spec:
    allowed = {5: V5_REASON_CODES[P.SUBACK], 3: V31_SUBACK_CODES}.get(protocol, V311_SUBACK_CODES)
    return Spec("SubAck", draw(u16_id),
                draw(st.lists(st.sampled_from(sorted(allowed)), min_size=1, max_size=6)),
                draw(maybe_props(protocol, P.SUBACK)))


@st.composite
def unsubscribes(draw: Any, protocol: int) -> Spec:
    return Spec("Unsubscribe", draw(u16_id),
                draw(st.lists(topic_filters(), min_size=1, max_size=4)),
                draw(maybe_props(protocol, P.UNSUBSCRIBE)))


@st.composite
def unsubacks(draw: Any, protocol: int) -> Spec:
    if protocol != 5:
        return Spec("UnsubAck", draw(u16_id))
    codes = st.sampled_from(sorted(V5_REASON_CODES[P.UNSUBACK]))
    return Spec("UnsubAck", draw(u16_id), draw(st.lists(codes, min_size=1, max_size=5)),
                draw(properties_for(P.UNSUBACK)))


@st.composite
def disconnects(draw: Any, protocol: int) -> Spec:
    if protocol != 5:
        return Spec("Disconnect")
    return Spec("Disconnect", draw(st.sampled_from(sorted(V5_REASON_CODES[P.DISCONNECT]))),
                draw(properties_for(P.DISCONNECT)))


@st.composite
def auths(draw: Any) -> Spec:
    return Spec("Auth", draw(st.sampled_from(sorted(V5_REASON_CODES[P.AUTH]))),
                draw(properties_for(P.AUTH)))


def packets(protocol: int) -> Any:
    """Any valid packet for ``protocol``, PUBLISH weighted up since it is the hot path."""
    options = [publishes(protocol), publishes(protocol), acks(protocol), connects(protocol),
               connacks(protocol), subscribes(protocol), subacks(protocol),
               unsubscribes(protocol), unsubacks(protocol), disconnects(protocol),
               st.just(Spec("PingReq")), st.just(Spec("PingResp"))]
    if protocol == 5:
        options.append(auths())
    return st.one_of(options)


@st.composite
def protocol_and_packet(draw: Any) -> Tuple[int, Spec]:
    protocol = draw(protocols)
    return protocol, draw(packets(protocol))


@st.composite
def protocol_and_packets(draw: Any) -> Tuple[int, List[Spec]]:
    protocol = draw(protocols)
    return protocol, draw(st.lists(packets(protocol), min_size=1, max_size=4))


# --------------------------------------------------------------------------- well-formed input

@SETTINGS
@given(protocol_and_packet())
def test_roundtrip(codec, case):
    protocol, spec = case
    packet = spec.build(codec)
    wire = codec.encode(packet, protocol)
    assert codec.decode(wire, protocol) == packet
    assert codec.encode(codec.decode(wire, protocol), protocol) == wire


@SETTINGS
@given(protocol_and_packet())
def test_twins_encode_identically_and_cross_decode(both, case):
    c, py = both
    protocol, spec = case
    from_c = c.encode(spec.build(c), protocol)
    from_py = py.encode(spec.build(py), protocol)
    assert from_c == from_py
    assert c.decode(from_py, protocol) == spec.build(py)
    assert py.decode(from_c, protocol) == spec.build(c)


@SETTINGS
@given(st.data())
def test_publish_encoders_agree(both, data):
    c, py = both
    protocol = data.draw(protocols)
    spec = data.draw(publishes(protocol))
    topic, payload, qos, packet_id, retain, dup = spec.args
    kwargs = dict(qos=qos, packet_id=packet_id, retain=retain, dup=dup, protocol=protocol,
                  properties=spec.kwargs["properties"])
    wire = py.encode_publish(topic, payload, **kwargs)
    assert c.encode_publish(topic, payload, **kwargs) == wire
    assert c.encode(spec.build(c), protocol) == wire
    prefix = data.draw(st.binary(max_size=8))
    buf_c, buf_py = bytearray(prefix), bytearray(prefix)
    assert c.append_publish(buf_c, topic, payload, **kwargs) == len(wire)
    assert py.append_publish(buf_py, topic, payload, **kwargs) == len(wire)
    assert buf_c == buf_py == prefix + wire
    # each decodes the other's output to an equal packet
    assert c.decode(wire, protocol) == py.decode(wire, protocol) == spec.build(py)


@SETTINGS
@given(protocol_and_packets(), st.data())
def test_stream_any_chunking(codec, case, data):
    protocol, specs = case
    expected = [s.build(codec) for s in specs]
    wire = b"".join(codec.encode(p, protocol) for p in expected)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    decoder = codec.StreamDecoder(protocol)
    got, last = [], 0
    for cut in cuts + [len(wire)]:
        got += decoder.feed(memoryview(wire)[last:cut])
        last = cut
    assert got == expected
    assert decoder.buffered == 0


@SETTINGS
@given(protocol_and_packets(), st.data())
def test_twin_streams_agree(both, case, data):
    c, py = both
    protocol, specs = case
    wire = b"".join(py.encode(s.build(py), protocol) for s in specs)
    cut = data.draw(st.integers(0, len(wire)))
    dc, dp = c.StreamDecoder(protocol), py.StreamDecoder(protocol)
    first_c, first_py = dc.feed(wire[:cut]), dp.feed(bytearray(wire[:cut]))
    assert first_c == first_py
    assert dc.buffered == dp.buffered
    assert first_c + dc.feed(wire[cut:]) == first_py + dp.feed(wire[cut:]) == \
        [s.build(py) for s in specs]


# --------------------------------------------------------------------------- hostile input

def outcome(fn: Any) -> Tuple[str, Any]:
    """("ok", result) or ("error", exception class); anything but MalformedPacket fails the test."""
    try:
        return "ok", fn()
    except MalformedPacket as exc:
        return "error", type(exc)


@st.composite
def mutated(draw: Any, min_ops: int = 1, max_ops: int = 3) -> Tuple[int, bytes]:
    """A valid packet with a few bytes changed, inserted or deleted: near-misses reach deeper
    into the decoders than uniformly random bytes do."""
    protocol, spec = draw(protocol_and_packet())
    wire = bytearray(_PY.encode(spec.build(_PY), protocol))
    for _ in range(draw(st.integers(min_ops, max_ops))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(wire) - 1, 0)))
        if op == "flip" and wire:
            wire[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and wire:
            wire[pos] = draw(st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80, 0xC0, 0xED, 0xFF]))
        elif op == "insert":
            wire[pos:pos] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete" and wire:
            del wire[pos]
        elif op == "truncate":
            del wire[pos:]
    return draw(protocols) if draw(st.integers(0, 4)) == 0 else protocol, bytes(wire)


hostile = st.one_of(
    st.tuples(protocols, st.binary(max_size=40)),
    st.tuples(protocols, st.binary(max_size=6).map(lambda b: bytes([0x30]) + b)),
    mutated(),
)


@settings(SETTINGS)
@given(hostile)
def test_decode_hostile_bytes(both, case):
    c, py = both
    protocol, wire = case
    got_c = outcome(lambda: c.decode(wire, protocol))
    got_py = outcome(lambda: py.decode(wire, protocol))
    event(f"decode: {got_py[0]}")  # --hypothesis-show-statistics: how much input gets through
    assert got_c == got_py


@settings(SETTINGS)
@given(st.tuples(protocols, st.lists(hostile.map(lambda case: case[1]), min_size=1, max_size=4)),
       st.data())
def test_stream_hostile_bytes(both, case, data):
    c, py = both
    protocol, pieces = case
    limit = data.draw(st.one_of(st.none(), st.integers(2, 64)))  # under 2 is refused
    dc = c.StreamDecoder(protocol, max_packet_size=limit)
    dp = py.StreamDecoder(protocol, max_packet_size=limit)
    for piece in pieces:
        got_c = outcome(lambda piece=piece: dc.feed(piece))
        got_py = outcome(lambda piece=piece: dp.feed(piece))
        assert got_c == got_py
        assert dc.buffered == dp.buffered
        if got_c[0] == "error":
            break


@settings(SETTINGS,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(mutated(min_ops=0, max_ops=1))
def test_accepted_input_normalises(codec, case):
    # Whatever a twin accepts it can re-encode (unless the encoder is stricter than the decoder,
    # which is allowed: be liberal in what you accept), and that re-encoding decodes to the same.
    protocol, wire = case
    kind, packet = outcome(lambda: codec.decode(wire, protocol))
    assume(kind == "ok")
    stream = codec.StreamDecoder(protocol)
    assert stream.feed(wire) == [packet]
    assert stream.buffered == 0
    try:
        again = codec.encode(packet, protocol)
    except ValueError:
        return
    assert codec.decode(again, protocol) == packet
