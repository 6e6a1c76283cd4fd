"""encode -> decode gives back the packet, for every packet type of every protocol, under both twins;
known byte vectors from the spec; remaining-length boundaries; append_publish."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mqttfast

from mqttfast import properties as props_mod
from mqttfast.constants import PacketType as P
from mqttfast.errors import InvalidTopic, MalformedPacket, PayloadTooLarge
from packet_cases import ALL_CASES, PROPERTY_DICTS, cases_with_properties

import mqttfast._codec_py as pure

PACKAGE_PARENT = str(Path(mqttfast.__file__).resolve().parent.parent)


@pytest.mark.parametrize("name, protocol, build", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_roundtrip(codec, name, protocol, build):
    packet = build(codec)
    wire = codec.encode(packet, protocol)
    assert isinstance(wire, bytes)
    decoded = codec.decode(wire, protocol)
    assert type(decoded).__name__ == type(packet).__name__
    assert decoded == packet
    assert codec.encode(decoded, protocol) == wire  # decoding loses nothing the encoder wrote
    # The stream decoder agrees with decode(), and also takes the other buffer types.
    assert codec.StreamDecoder(protocol).feed(wire) == [packet]
    assert codec.decode(bytearray(wire), protocol) == packet
    assert codec.decode(memoryview(wire), protocol) == packet


@pytest.mark.parametrize("name, protocol, build", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_twins_encode_identically(both, name, protocol, build):
    c, py = both
    wire = py.encode(build(py), protocol)
    assert c.encode(build(c), protocol) == wire
    assert c.decode(wire, protocol) == py.decode(wire, protocol) == build(py)


def test_every_packet_type_is_covered():
    seen = {(proto, build(pure).type) for _, proto, build in ALL_CASES}
    for protocol in (3, 4, 5):
        expected = {t for t in P if t != P.AUTH or protocol == 5}
        assert {t for proto, t in seen if proto == protocol} == expected, protocol


def test_every_property_is_exercised():
    used = set()
    for _, _, build in cases_with_properties():
        packet = build(pure)
        used |= set(packet.properties or ())
        will = getattr(packet, "will", None)
        if will is not None:
            used |= set(will.properties or ())
    assert used == set(props_mod.BY_NAME)
    # ... and the shared dicts only hold real property names
    for d in PROPERTY_DICTS:
        assert set(d) <= set(props_mod.BY_NAME)


def test_publish_properties_decode_as_documented(codec):
    wire = codec.encode_publish("t", b"", protocol=5, properties={
        "subscription_identifier": [3, 4], "user_property": [("a", "1"), ("a", "2")],
        "correlation_data": bytearray(b"cd")})
    packet = codec.decode(wire, 5)
    assert packet.properties == {"subscription_identifier": [3, 4],
                                 "user_property": [("a", "1"), ("a", "2")],
                                 "correlation_data": b"cd"}
    assert type(packet.properties["correlation_data"]) is bytes
    assert codec.decode(codec.encode_publish("t", b"", protocol=5), 5).properties is None
    assert codec.decode(codec.encode_publish("t", b"", protocol=5, properties={}), 5).properties \
        is None


def test_subscription_identifier_int_in_publish(codec):
    # An int is taken as one identifier; it decodes, as always in a PUBLISH, as a list.
    wire = codec.encode_publish("t", b"", protocol=5, properties={"subscription_identifier": 5})
    assert wire == codec.encode_publish("t", b"", protocol=5,
                                        properties={"subscription_identifier": [5]})
    assert codec.decode(wire, 5).properties == {"subscription_identifier": [5]}


def test_publish_payload_types(codec):
    expected = codec.encode_publish("t", b"abc")
    assert codec.encode_publish("t", bytearray(b"abc")) == expected
    assert codec.encode_publish("t", memoryview(b"xabcx")[1:4]) == expected
    assert codec.encode_publish("t", "abc") == expected
    packet = codec.decode(expected)
    assert type(packet.payload) is bytes and packet.payload == b"abc"


def test_qos0_publish_drops_packet_id(codec):
    # A QoS 0 PUBLISH has no packet identifier on the wire.
    assert codec.encode_publish("t", b"", 0, 5) == codec.encode_publish("t", b"", 0, 0)
    assert codec.decode(codec.encode(codec.Publish("t", b"", 0, 5))).packet_id == 0


# --------------------------------------------------------------------------- spec byte vectors

CONNECT_311 = (b"\x10\x0f" b"\x00\x04MQTT" b"\x04" b"\x02" b"\x00\x3c" b"\x00\x03abc")
CONNECT_31 = (b"\x10\x11" b"\x00\x06MQIsdp" b"\x03" b"\x02" b"\x00\x3c" b"\x00\x03abc")
CONNECT_5 = (b"\x10\x10" b"\x00\x04MQTT" b"\x05" b"\x02" b"\x00\x3c" b"\x00" b"\x00\x03abc")
# 3.1.1 with every flag: username, password, will retain, will QoS 1, will, clean session.
CONNECT_311_FULL = (b"\x10\x23" b"\x00\x04MQTT" b"\x04" b"\xee" b"\x00\x0a"
                    b"\x00\x03abc" b"\x00\x03w/t" b"\x00\x03bye" b"\x00\x04user" b"\x00\x02pw")

VECTORS = [
    ("connect-3.1.1", 4, lambda m: m.Connect("abc", 4, True, 60), CONNECT_311),
    ("connect-3.1", 3, lambda m: m.Connect("abc", 3, True, 60), CONNECT_31),
    ("connect-5", 5, lambda m: m.Connect("abc", 5, True, 60), CONNECT_5),
    ("connect-3.1.1-full", 4,
     lambda m: m.Connect("abc", 4, True, 10, "user", b"pw", m.Will("w/t", b"bye", 1, True)),
     CONNECT_311_FULL),
    ("connect-5-props", 5, lambda m: m.Connect("", 5, False, 0, properties={
        "session_expiry_interval": 0x0A, "receive_maximum": 0x14}),
     b"\x10\x15\x00\x04MQTT\x05\x00\x00\x00" b"\x08\x11\x00\x00\x00\x0a\x21\x00\x14" b"\x00\x00"),
    ("connack", 4, lambda m: m.ConnAck(False, 0), b"\x20\x02\x00\x00"),
    ("connack-session-present", 4, lambda m: m.ConnAck(True, 0), b"\x20\x02\x01\x00"),
    ("connack-refused", 4, lambda m: m.ConnAck(False, 5), b"\x20\x02\x00\x05"),
    ("connack-5", 5, lambda m: m.ConnAck(False, 0), b"\x20\x03\x00\x00\x00"),
    ("connack-5-props", 5, lambda m: m.ConnAck(True, 0, {"server_keep_alive": 30}),
     b"\x20\x06\x01\x00\x03\x13\x00\x1e"),
    ("publish-qos0", 4, lambda m: m.Publish("a/b", b"hi"), b"\x30\x07\x00\x03a/b" b"hi"),
    ("publish-qos0-retain", 4, lambda m: m.Publish("a/b", b"", retain=True),
     b"\x31\x05\x00\x03a/b"),
    ("publish-qos1", 4, lambda m: m.Publish("a/b", b"hi", 1, 10),
     b"\x32\x09\x00\x03a/b\x00\x0a" b"hi"),
    ("publish-qos2-dup-retain", 4, lambda m: m.Publish("a/b", b"hi", 2, 0x1234, True, True),
     b"\x3d\x09\x00\x03a/b\x12\x34" b"hi"),
    ("publish-qos1-v5", 5, lambda m: m.Publish("a/b", b"hi", 1, 10),
     b"\x32\x0a\x00\x03a/b\x00\x0a\x00" b"hi"),
    ("publish-v5-props", 5,
     lambda m: m.Publish("a/b", b"", 0, properties={"topic_alias": 2, "content_type": "t"}),
     b"\x30\x0d\x00\x03a/b" b"\x07\x23\x00\x02\x03\x00\x01t"),
    ("publish-v5-utf8-topic", 5, lambda m: m.Publish("é", b"", 0),
     b"\x30\x05\x00\x02\xc3\xa9\x00"),
    ("puback", 4, lambda m: m.PubAck(10), b"\x40\x02\x00\x0a"),
    ("pubrec", 4, lambda m: m.PubRec(10), b"\x50\x02\x00\x0a"),
    ("pubrel", 4, lambda m: m.PubRel(10), b"\x62\x02\x00\x0a"),
    ("pubcomp", 4, lambda m: m.PubComp(10), b"\x70\x02\x00\x0a"),
    ("puback-5-success", 5, lambda m: m.PubAck(10), b"\x40\x02\x00\x0a"),
    ("puback-5-reason", 5, lambda m: m.PubAck(10, 0x10), b"\x40\x03\x00\x0a\x10"),
    ("pubrel-5-props", 5, lambda m: m.PubRel(10, 0, {"reason_string": "r"}),
     b"\x62\x08\x00\x0a\x00\x04\x1f\x00\x01r"),
    ("subscribe", 4, lambda m: m.Subscribe(1, [m.Subscription("a/b", 1)]),
     b"\x82\x08\x00\x01\x00\x03a/b\x01"),
    ("subscribe-two", 4, lambda m: m.Subscribe(2, [m.Subscription("a", 0), m.Subscription("#", 2)]),
     b"\x82\x0a\x00\x02\x00\x01a\x00\x00\x01#\x02"),
    ("subscribe-5-options", 5,
     lambda m: m.Subscribe(1, [m.Subscription("a", 1, True, True, 2)]),
     b"\x82\x07\x00\x01\x00\x00\x01a\x2d"),
    ("subscribe-5-id", 5,
     lambda m: m.Subscribe(1, [m.Subscription("a", 0)], {"subscription_identifier": 200}),
     b"\x82\x0a\x00\x01\x03\x0b\xc8\x01\x00\x01a\x00"),
    ("suback", 4, lambda m: m.SubAck(1, [1, 0x80]), b"\x90\x04\x00\x01\x01\x80"),
    ("suback-5", 5, lambda m: m.SubAck(1, [2, 0x87]), b"\x90\x05\x00\x01\x00\x02\x87"),
    ("unsubscribe", 4, lambda m: m.Unsubscribe(1, ["a/b"]), b"\xa2\x07\x00\x01\x00\x03a/b"),
    ("unsubscribe-5", 5, lambda m: m.Unsubscribe(1, ["a/b"]), b"\xa2\x08\x00\x01\x00\x00\x03a/b"),
    ("unsuback", 4, lambda m: m.UnsubAck(1), b"\xb0\x02\x00\x01"),
    ("unsuback-5", 5, lambda m: m.UnsubAck(1, [0x11]), b"\xb0\x04\x00\x01\x00\x11"),
    ("pingreq", 4, lambda m: m.PingReq(), b"\xc0\x00"),
    ("pingreq-5", 5, lambda m: m.PingReq(), b"\xc0\x00"),
    ("pingresp", 4, lambda m: m.PingResp(), b"\xd0\x00"),
    ("disconnect", 4, lambda m: m.Disconnect(), b"\xe0\x00"),
    ("disconnect-3.1", 3, lambda m: m.Disconnect(), b"\xe0\x00"),
    ("disconnect-5", 5, lambda m: m.Disconnect(), b"\xe0\x00"),
    ("disconnect-5-reason", 5, lambda m: m.Disconnect(0x04), b"\xe0\x02\x04\x00"),
    ("disconnect-5-props", 5, lambda m: m.Disconnect(0, {"session_expiry_interval": 1}),
     b"\xe0\x07\x00\x05\x11\x00\x00\x00\x01"),
    ("auth-5", 5, lambda m: m.Auth(), b"\xf0\x00"),
    ("auth-5-continue", 5, lambda m: m.Auth(0x18, {"authentication_method": "m"}),
     b"\xf0\x06\x18\x04\x15\x00\x01m"),
]


@pytest.mark.parametrize("name, protocol, build, wire", VECTORS, ids=[v[0] for v in VECTORS])
def test_spec_vector(codec, name, protocol, build, wire):
    packet = build(codec)
    assert codec.encode(packet, protocol) == wire
    assert codec.decode(wire, protocol) == packet


def test_spec_vectors_for_the_direct_encoders(codec):
    assert codec.encode_publish("a/b", b"hi", 1, 10) == b"\x32\x09\x00\x03a/b\x00\x0ahi"
    assert codec.encode_publish("a/b", b"hi", 1, 10, protocol=5) == \
        b"\x32\x0a\x00\x03a/b\x00\x0a\x00hi"
    assert codec.encode_ack(P.PUBACK, 10) == b"\x40\x02\x00\x0a"
    assert codec.encode_ack(P.PUBREC, 10) == b"\x50\x02\x00\x0a"
    assert codec.encode_ack(P.PUBREL, 10) == b"\x62\x02\x00\x0a"
    assert codec.encode_ack(P.PUBCOMP, 0xABCD) == b"\x70\x02\xab\xcd"
    assert codec.encode_ack(P.PUBACK, 10, 0x10, protocol=5) == b"\x40\x03\x00\x0a\x10"
    assert codec.encode_ack(P.PUBACK, 10, 0, protocol=5) == b"\x40\x02\x00\x0a"
    assert codec.encode_ack(4, 10, protocol=3) == b"\x40\x02\x00\x0a"  # plain ints work too


@pytest.mark.parametrize("wire, expected", [
    # MQTT 5 lets a sender omit the reason code and property length when they are 0 / empty.
    (b"\x40\x02\x00\x0a", ("PubAck", 10, 0, None)),
    (b"\x40\x03\x00\x0a\x00", ("PubAck", 10, 0, None)),
    (b"\x40\x04\x00\x0a\x00\x00", ("PubAck", 10, 0, None)),
    (b"\x40\x04\x00\x0a\x10\x00", ("PubAck", 10, 0x10, None)),
    (b"\x62\x03\x00\x0a\x92", ("PubRel", 10, 0x92, None)),
])
def test_v5_ack_short_forms(codec, wire, expected):
    packet = codec.decode(wire, 5)
    name, packet_id, code, props = expected
    assert (type(packet).__name__, packet.packet_id, packet.reason_code, packet.properties) == \
        (name, packet_id, code, props)


@pytest.mark.parametrize("wire, code, props", [
    (b"\xe0\x00", 0, None),
    (b"\xe0\x01\x00", 0, None),
    (b"\xe0\x01\x04", 4, None),
    (b"\xe0\x02\x04\x00", 4, None),
    (b"\xe0\x02\x00\x00", 0, None),
])
def test_v5_disconnect_short_forms(codec, wire, code, props):
    assert codec.decode(wire, 5) == codec.Disconnect(code, props)


def test_v5_auth_short_forms(codec):
    assert codec.decode(b"\xf0\x00", 5) == codec.Auth(0)
    assert codec.decode(b"\xf0\x01\x18", 5) == codec.Auth(0x18)
    assert codec.decode(b"\xf0\x02\x19\x00", 5) == codec.Auth(0x19)


def test_connack_31_ignores_its_unused_first_byte(codec):
    # In MQTT 3.1 the first CONNACK byte is reserved; session_present does not exist.
    assert codec.decode(b"\x20\x02\x01\x00", 3) == codec.ConnAck(False, 0)
    assert codec.encode(codec.ConnAck(True, 0), 3) == b"\x20\x02\x00\x00"


# --------------------------------------------------------------------------- remaining length

BOUNDARIES = [
    (0, b"\x00"),
    (1, b"\x01"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"),
    (2_097_151, b"\xff\xff\x7f"),
    (2_097_152, b"\x80\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
]


@pytest.mark.parametrize("value, wire", BOUNDARIES, ids=[str(v) for v, _ in BOUNDARIES])
def test_remaining_length_boundaries(codec, value, wire):
    assert codec.encode_remaining_length(value) == wire
    assert codec.decode_remaining_length(wire) == (value, len(wire))
    assert codec.decode_remaining_length(b"\xaa\xbb" + wire + b"\xcc", 2) == (value, 2 + len(wire))
    assert codec.decode_remaining_length(bytearray(wire)) == (value, len(wire))
    assert codec.decode_remaining_length(memoryview(b"\x00" + wire), 1) == (value, 1 + len(wire))
    # Every strict prefix is incomplete, not an error.
    for cut in range(len(wire)):
        assert codec.decode_remaining_length(wire[:cut]) is None


@pytest.mark.parametrize("value", [268_435_456, 2 ** 32, -1])
def test_remaining_length_out_of_range_refused(codec, value):
    with pytest.raises((ValueError, OverflowError)):
        codec.encode_remaining_length(value)


def test_remaining_length_longer_than_four_bytes(codec):
    with pytest.raises(MalformedPacket, match="longer than 4 bytes"):
        codec.decode_remaining_length(b"\x80\x80\x80\x80\x01")
    with pytest.raises(MalformedPacket, match="longer than 4 bytes"):
        codec.decode_remaining_length(b"\x00\xff\xff\xff\xff\x7f", 1)
    # Four continuation bytes are already too many, even before the fifth arrives.
    with pytest.raises(MalformedPacket, match="longer than 4 bytes"):
        codec.decode_remaining_length(b"\xff\xff\xff\xff")


@pytest.mark.parametrize("value", [127, 128, 16_383, 16_384, 2_097_151, 2_097_152])
def test_publish_at_remaining_length_boundary(codec, value):
    # topic "t" (2 + 1 bytes) + payload = value
    payload = b"\xa5" * (value - 3)
    wire = codec.encode_publish("t", payload)
    header = b"\x30" + codec.encode_remaining_length(value)
    assert wire[:len(header)] == header
    assert len(wire) == len(header) + value
    packet = codec.decode(wire)
    assert packet.topic == "t" and packet.payload == payload
    assert codec.StreamDecoder().feed(wire) == [packet]


def test_payload_too_large(codec):
    # topic "a": remaining length = 2 + 1 + payload; the largest legal payload is 268,435,452 bytes.
    # bytes(n) is calloc'd zero pages, so this costs next to nothing unless a twin copies it.
    payload = bytes(268_435_453)
    with pytest.raises(PayloadTooLarge, match="268435455"):
        codec.encode_publish("a", payload)
    buf = bytearray(b"keep")
    with pytest.raises(PayloadTooLarge):
        codec.append_publish(buf, "a", payload)
    assert buf == b"keep"
    # The largest legal QoS 0 payload; the QoS 1 packet id, or an MQTT 5 property length byte,
    # pushes it over (only the refusals are encoded, so nothing is copied).
    largest = bytes(268_435_452)
    with pytest.raises(PayloadTooLarge):
        codec.encode_publish("a", largest, 1, 1)
    with pytest.raises(PayloadTooLarge):
        codec.encode_publish("a", largest, protocol=5)


# --------------------------------------------------------------------------- append_publish

APPEND_CALLS = [
    (("a/b", b"one"), {}),
    (("a/b", b""), {"qos": 1, "packet_id": 1}),
    (("ü", "text"), {"qos": 2, "packet_id": 65535, "retain": True, "dup": True}),
    (("x", bytearray(b"ba")), {"retain": True}),
    (("y", memoryview(b"mv")), {"protocol": 3}),
    (("z", b"p" * 300), {"qos": 1, "packet_id": 77, "protocol": 5,
                         "properties": {"message_expiry_interval": 5,
                                        "user_property": [("k", "v")]}}),
    (("", b"alias"), {"protocol": 5, "properties": {"topic_alias": 3}}),
]


def test_append_publish_equals_concatenated_encode_publish(codec):
    buf = bytearray(b"prefix")
    expected = b"prefix"
    for args, kwargs in APPEND_CALLS:
        one = codec.encode_publish(*args, **kwargs)
        size = codec.append_publish(buf, *args, **kwargs)
        assert size == len(one)
        expected += one
        assert bytes(buf) == expected
        packet = codec.decode(one, kwargs.get("protocol", 4))
        assert packet.topic == args[0]
        assert packet.payload == (args[1].encode() if isinstance(args[1], str) else bytes(args[1]))


def test_append_publish_leaves_buffer_alone_on_error(codec):
    buf = bytearray(b"keep")
    for args, kwargs in [(("a/+", b""), {}), (("a", b""), {"qos": 3}),
                         (("a", b""), {"qos": 1, "packet_id": 0}),
                         (("a", b""), {"properties": {"topic_alias": 1}})]:
        with pytest.raises(ValueError):
            codec.append_publish(buf, *args, **kwargs)
        assert buf == b"keep"


def test_append_publish_needs_a_bytearray(codec):
    # bytes cannot grow in place: refusing beats silently appending to a copy.
    with pytest.raises(TypeError):
        codec.append_publish(b"immutable", "a", b"")
    with pytest.raises(TypeError):
        codec.append_publish(memoryview(bytearray(b"x")), "a", b"")


def test_append_publish_none_buffer(codec):
    # Run in a child process: a typed ``bytearray`` argument in Cython accepts None unless declared
    # ``not None``, and then crashes the interpreter instead of raising.
    code = (f"import {codec.__name__} as m\n"
            "try:\n    m.append_publish(None, 'a', b'x')\n"
            "except TypeError:\n    print('TypeError')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE_PARENT, env={**os.environ, "PYTHONPATH": PACKAGE_PARENT},
                          timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (0, "TypeError"), proc.stderr


# --------------------------------------------------------------------------- append_publish_many

MANY_CALLS = [
    ("a/b", [b"one", b"", "two", bytearray(b"three"), memoryview(b"four")], {}),
    ("t", [b"x" * 200, b"y"], {"retain": True}),
    ("ü/€", [b"p"], {"protocol": 3}),
    ("v5", [b"1", b"22"], {"protocol": 5, "properties": {"message_expiry_interval": 9,
                                                          "user_property": [("k", "v")]}}),
    ("", [b"alias"] * 3, {"protocol": 5, "properties": {"topic_alias": 2}}),
]


@pytest.mark.parametrize("topic, payloads, kwargs", MANY_CALLS, ids=[c[0] or "alias"
                                                                       for c in MANY_CALLS])
def test_append_publish_many_equals_encode_publish_each(codec, topic, payloads, kwargs):
    expected = b"".join(codec.encode_publish(topic, p, **kwargs) for p in payloads)
    buf = bytearray(b"pre")
    assert codec.append_publish_many(buf, topic, payloads, **kwargs) == len(expected)
    assert buf == b"pre" + expected
    # a generator works as well as a list
    buf2 = bytearray()
    assert codec.append_publish_many(buf2, topic, (p for p in payloads), **kwargs) == len(expected)
    assert buf2 == expected


def test_append_publish_many_checks_its_arguments(codec):
    buf = bytearray(b"keep")
    assert codec.append_publish_many(buf, "a", []) == 0
    assert buf == b"keep"
    for topic, kwargs, exc, match in [
        ("a/+", {}, InvalidTopic, "wildcards"),
        ("", {}, InvalidTopic, "empty"),
        ("a", {"protocol": 4, "properties": {"topic_alias": 1}}, ValueError, "protocol 5"),
        ("a", {"protocol": 9}, ValueError, "protocol must be"),
        ("a", {"protocol": 5, "properties": {"colour": 1}}, ValueError, "unknown MQTT 5 property"),
    ]:
        with pytest.raises(exc, match=match):
            codec.append_publish_many(buf, topic, [b"x", b"y"], **kwargs)
        assert buf == b"keep"
    with pytest.raises(TypeError, match="payload must be"):
        codec.append_publish_many(buf, "a", [42])
    for bad_buf in (b"immutable", None, memoryview(bytearray(4))):
        with pytest.raises(TypeError):
            codec.append_publish_many(bad_buf, "a", [b"x"])


def test_append_publish_many_twins_agree(both):
    c, py = both
    payloads = [bytes([i % 256]) * i for i in range(0, 300, 7)]
    bc, bp = bytearray(), bytearray()
    assert c.append_publish_many(bc, "s/1", payloads, True, 5, {"content_type": "x"}) == \
        py.append_publish_many(bp, "s/1", payloads, True, 5, {"content_type": "x"})
    assert bc == bp
    assert c.StreamDecoder(5).feed(bc) == [
        py.Publish("s/1", p, retain=True, properties={"content_type": "x"}) for p in payloads]


def test_connect_repr_hides_the_password(codec):
    # A repr ends up in logs and tracebacks: it must not carry the secret.
    pkt = codec.Connect("id", 4, True, 60, "alice", b"s3cret-pw",
                        codec.Will("w/t", b"bye-payload", 1, True))
    text = repr(pkt)
    assert "s3cret" not in text and "password=<hidden>" in text
    assert "username='alice'" in text and "b'bye-payload'" in text  # the rest is still there
    assert "password=None" in repr(codec.Connect("id", 5, True, 60, "alice"))
    assert "s3cret" not in repr(codec.Connect("id", 5, password="s3cret"))
    assert "password=<hidden>" in repr(codec.Connect("id", 5, password=b""))  # set, though empty
    # equality and round trips still see the real password
    decoded = codec.decode(codec.encode(pkt))
    assert decoded == pkt and decoded.password == b"s3cret-pw"
    assert "s3cret" not in repr(decoded)
