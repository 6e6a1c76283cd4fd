"""``WriteBuffer``: the outgoing byte stream of one session, in both twins.

Its bytes must be exactly those of the module-level encoders, and its two counters (``position``:
bytes ever written; ``taken``: bytes ever taken or discarded) must add up across write, take and
discard, since QoS 0 completion marks are positions in this stream.
"""
from __future__ import annotations

from typing import Any, List, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqttfast.errors import InvalidTopic, PayloadTooLarge

from packet_cases import PUBLISH_PROPS

# (qos, packet_id, retain, dup, protocol, properties): every header shape the encoder can make.
PUBLISH_SHAPES = [
    (0, 0, False, False, 4, None),
    (0, 0, True, False, 3, None),
    (1, 1, False, False, 4, None),
    (1, 65535, True, True, 4, None),
    (2, 300, False, True, 4, None),
    (0, 0, False, False, 5, None),
    (0, 0, True, False, 5, {"topic_alias": 3, "user_property": [("k", "v")]}),
    (1, 7, False, False, 5, PUBLISH_PROPS),
    (2, 9, True, True, 5, {"message_expiry_interval": 60, "content_type": "text/plain"}),
]
SHAPE_IDS = [f"q{s[0]}-v{s[4]}{'-props' if s[5] else ''}{'-retain' if s[2] else ''}"
             for s in PUBLISH_SHAPES]
PAYLOADS = [b"", b"x", b"p" * 64, b"\x00" * 200, "text é", bytearray(b"ba"), memoryview(b"mv")]


@pytest.mark.parametrize("shape", PUBLISH_SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("payload", PAYLOADS, ids=[f"payload{i}" for i in range(len(PAYLOADS))])
def test_append_publish_bytes_equal_the_module_encoders(codec, shape, payload):
    qos, packet_id, retain, dup, protocol, props = shape
    expected = codec.encode_publish("a/b/c", payload, qos, packet_id, retain, dup, protocol, props)
    module_buf = bytearray(b"head")
    n = codec.append_publish(module_buf, "a/b/c", payload, qos, packet_id, retain, dup, protocol,
                             props)
    assert bytes(module_buf[4:]) == expected and n == len(expected)

    wb = codec.WriteBuffer()
    assert wb.append_publish("a/b/c", payload, qos, packet_id, retain, dup, protocol,
                             props) == len(expected)
    assert wb.peek() == expected
    # keywords too, and max_size exactly the packet's size is allowed
    assert wb.append_publish(topic="a/b/c", payload=payload, qos=qos, packet_id=packet_id,
                             retain=retain, dup=dup, protocol=protocol, properties=props,
                             max_size=len(expected)) == 2 * len(expected)
    assert wb.peek() == expected * 2


@pytest.mark.parametrize("protocol, props", [(4, None), (3, None), (5, None),
                                             (5, {"user_property": [("a", "b")]})])
def test_append_publish_many_bytes_equal_the_module_encoder(codec, protocol, props):
    payloads = [b"", b"one", "two", b"x" * 300, bytearray(b"ba")]
    module_buf = bytearray()
    n = codec.append_publish_many(module_buf, "t/many", payloads, True, protocol, props)
    wb = codec.WriteBuffer()
    wb.write(b"\xc0\x00")  # a PINGREQ already queued
    assert wb.append_publish_many("t/many", payloads, True, protocol, props) == 2 + n
    assert wb.peek() == b"\xc0\x00" + bytes(module_buf)
    largest = len(codec.encode_publish("t/many", b"x" * 300, retain=True, protocol=protocol,
                                       properties=props))
    assert wb.append_publish_many("t/many", iter(payloads), retain=True, protocol=protocol,
                                  properties=props, max_size=largest) == 2 + 2 * n
    assert wb.append_publish_many("t/many", [], protocol=protocol) == 2 + 2 * n


@pytest.mark.parametrize("args", [(4, 1), (5, 65535), (6, 2), (7, 300), (4, 9, 0x10, 5),
                                  (6, 9, 0x92, 5), (7, 1, 0, 5), (5, 3, 0, 3)])
def test_append_ack_bytes_equal_encode_ack(codec, args):
    wb = codec.WriteBuffer()
    expected = codec.encode_ack(*args)
    assert wb.append_ack(*args) == len(expected)
    assert wb.peek() == expected
    names = ("packet_type", "packet_id", "reason_code", "protocol")
    # args may stop before reason_code/protocol (their defaults): names is cut to fit
    assert wb.append_ack(**dict(zip(names, args, strict=False))) == 2 * len(expected)


def test_position_and_taken_accounting(codec):
    wb = codec.WriteBuffer()
    assert (len(wb), bool(wb), wb.position, wb.taken, wb.peek()) == (0, False, 0, 0, b"")
    assert wb.write(b"abc") == 3
    assert wb.write(bytearray(b"de")) == 5
    assert wb.write(memoryview(b"fgh")) == 8
    assert wb.write(b"") == 8
    assert (len(wb), bool(wb), wb.position, wb.taken) == (8, True, 8, 0)
    out = wb.take()
    assert type(out) is bytearray and out == b"abcdefgh"
    assert (len(wb), bool(wb), wb.position, wb.taken, wb.peek()) == (0, False, 8, 8, b"")
    out += b"mine now"  # ownership passed: the buffer does not see it
    assert wb.peek() == b"" and len(wb) == 0
    packet = codec.encode_publish("t", b"p")
    assert wb.append_publish("t", b"p") == 8 + len(packet)
    assert wb.peek() == packet and wb.taken == 8
    assert wb.discard() == len(packet)
    assert (len(wb), wb.position, wb.taken) == (0, 8 + len(packet), 8 + len(packet))
    assert wb.discard() == 0
    assert wb.take() == bytearray() and wb.taken == wb.position
    assert wb.append_ack(4, 1) == wb.position == 12 + len(packet)
    held = wb.peek()
    assert type(held) is bytes and wb.peek() == held and len(wb) == 4  # peek takes nothing


def test_take_does_not_copy_and_hands_over_a_fresh_buffer(codec):
    wb = codec.WriteBuffer()
    wb.write(b"x" * 1000)
    first = wb.take()
    wb.write(b"y")
    second = wb.take()
    assert first is not second and first == b"x" * 1000 and second == b"y"


def test_position_is_64_bit(codec):
    # positions count every byte across connections and never wrap at 2**31 or 2**32.
    wb = codec.WriteBuffer()
    chunk = b"z" * (1 << 20)
    for _ in range(5):
        wb.write(chunk)
        wb.discard()
    assert wb.position == wb.taken == 5 << 20
    assert isinstance(wb.position, int) and isinstance(wb.taken, int)


def test_max_size_refusal_appends_nothing(codec):
    wb = codec.WriteBuffer()
    wb.write(b"\xc0\x00")
    size = len(codec.encode_publish("t/x", b"p" * 100, 1, 1))
    with pytest.raises(PayloadTooLarge, match="maximum packet size"):
        wb.append_publish("t/x", b"p" * 100, 1, 1, max_size=size - 1)
    assert (wb.peek(), wb.position, wb.taken) == (b"\xc0\x00", 2, 0)
    assert wb.append_publish("t/x", b"p" * 100, 1, 1, max_size=size) == 2 + size
    assert wb.append_publish("t/x", b"p" * 100, 1, 1, max_size=0) == 2 + 2 * size  # 0: no limit
    before = wb.peek()
    # a batch: one payload too big refuses the whole batch, appending nothing
    with pytest.raises(PayloadTooLarge, match="maximum packet size"):
        wb.append_publish_many("t/x", [b"", b"p" * 100, b""], max_size=size - 5)
    assert wb.peek() == before and wb.position == len(before)


def test_a_failed_batch_appends_nothing(codec):
    # A bad payload in the middle of a batch must not leave half of it behind, in the module
    # function or in the buffer (the caller could not count what went in).
    buf = bytearray(b"keep")
    with pytest.raises(TypeError, match="payload"):
        codec.append_publish_many(buf, "t", [b"a", b"b", 42, b"c"])
    assert buf == b"keep"
    wb = codec.WriteBuffer()
    wb.write(b"keep")
    with pytest.raises(TypeError, match="payload"):
        wb.append_publish_many("t", [b"a", None])
    assert (wb.peek(), wb.position) == (b"keep", 4)
    with pytest.raises(InvalidTopic):
        wb.append_publish_many("t/#", [b"a"])
    assert (wb.peek(), wb.position) == (b"keep", 4)


# Invalid arguments: the same exception type in both twins, and nothing appended.
BAD_CALLS = [
    ("write-str", lambda wb: wb.write("text"), TypeError),
    ("write-int", lambda wb: wb.write(3), TypeError),
    ("write-None", lambda wb: wb.write(None), TypeError),
    ("publish-wildcard", lambda wb: wb.append_publish("a/+", b""), InvalidTopic),
    ("publish-empty-topic", lambda wb: wb.append_publish("", b""), InvalidTopic),
    ("publish-topic-bytes", lambda wb: wb.append_publish(b"t", b""), TypeError),
    ("publish-payload-int", lambda wb: wb.append_publish("t", 5), TypeError),
    ("publish-qos-3", lambda wb: wb.append_publish("t", b"", 3, 1), ValueError),
    ("publish-qos-str", lambda wb: wb.append_publish("t", b"", "1", 1), TypeError),
    ("publish-qos-bool", lambda wb: wb.append_publish("t", b"", True, 1), TypeError),
    ("publish-retain-int", lambda wb: wb.append_publish("t", b"", retain=1), TypeError),
    ("publish-dup-str", lambda wb: wb.append_publish("t", b"", 1, 1, dup="yes"), TypeError),
    ("publish-packet-id-0", lambda wb: wb.append_publish("t", b"", 1, 0), ValueError),
    ("publish-packet-id-str", lambda wb: wb.append_publish("t", b"", 1, "1"), TypeError),
    ("publish-dup-qos0", lambda wb: wb.append_publish("t", b"", dup=True), ValueError),
    ("publish-protocol-6", lambda wb: wb.append_publish("t", b"", protocol=6), ValueError),
    ("publish-props-v4", lambda wb: wb.append_publish("t", b"", properties={"topic_alias": 1}),
     ValueError),
    ("publish-max-size-str", lambda wb: wb.append_publish("t", b"", max_size="9"), TypeError),
    ("publish-max-size-None", lambda wb: wb.append_publish("t", b"", max_size=None), TypeError),
    ("publish-max-size-negative", lambda wb: wb.append_publish("t", b"", max_size=-1), ValueError),
    ("many-retain-int", lambda wb: wb.append_publish_many("t", [b""], retain=0), TypeError),
    ("many-payloads-None", lambda wb: wb.append_publish_many("t", None), TypeError),
    ("many-max-size-float", lambda wb: wb.append_publish_many("t", [b""], max_size=9.0),
     TypeError),
    ("ack-type-3", lambda wb: wb.append_ack(3, 1), ValueError),
    ("ack-id-0", lambda wb: wb.append_ack(4, 0), ValueError),
    ("ack-reason-v4", lambda wb: wb.append_ack(4, 1, 0x10), ValueError),
    ("ack-reason-invalid", lambda wb: wb.append_ack(4, 1, 0x92, 5), ValueError),
    ("ack-protocol-2", lambda wb: wb.append_ack(4, 1, 0, 2), ValueError),
]


@pytest.mark.parametrize("name, call, error", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_invalid_arguments_raise_and_append_nothing(codec, name, call, error):
    wb = codec.WriteBuffer()
    wb.write(b"ab")
    with pytest.raises(error) as info:
        call(wb)
    assert type(info.value) is error  # not a subclass surprise
    assert (wb.peek(), wb.position, wb.taken, len(wb)) == (b"ab", 2, 0, 2)


def test_invalid_arguments_give_the_same_messages_in_both_twins(both):
    c, py = both
    for name, call, _error in BAD_CALLS:
        outcomes = []
        for m in (c, py):
            try:
                call(m.WriteBuffer())
            except Exception as exc:  # noqa: BLE001  (compared, not swallowed)
                outcomes.append((type(exc), str(exc)))
        assert outcomes[0] == outcomes[1], name


def test_counters_are_read_only(codec):
    wb = codec.WriteBuffer()
    for name in ("position", "taken"):
        with pytest.raises(AttributeError):
            setattr(wb, name, 5)


def test_repr_is_readable_and_the_same_in_both(both):
    c, py = both
    made = []
    for m in (c, py):
        wb = m.WriteBuffer()
        wb.write(b"12345")
        wb.take()
        wb.write(b"67")
        made.append(repr(wb))
    assert made[0] == made[1] == "<WriteBuffer held=2 position=7 taken=5>"


# --------------------------------------------------------------------------- hypothesis

topics = st.sampled_from(["t", "a/b", "sensors/abc/temp", "é/日本", "x" * 300])
payloads = st.one_of(st.binary(max_size=150), st.text(max_size=20))
operations = st.lists(st.one_of(
    st.tuples(st.just("write"), st.binary(max_size=40)),
    st.tuples(st.just("publish"), topics, payloads, st.integers(0, 2), st.integers(1, 0xFFFF),
              st.booleans(), st.booleans(), st.sampled_from([3, 4, 5]),
              st.sampled_from([0, 0, 20, 80, 400])),
    st.tuples(st.just("many"), topics, st.lists(payloads, max_size=4), st.booleans(),
              st.sampled_from([4, 5]), st.sampled_from([0, 30, 1000])),
    st.tuples(st.just("ack"), st.integers(4, 7), st.integers(1, 0xFFFF),
              st.sampled_from([0, 0, 0x10, 0x92]), st.sampled_from([4, 5])),
    st.tuples(st.just("take")),
    st.tuples(st.just("discard")),
    st.tuples(st.just("peek")),
), max_size=25)


def _run(m: Any, ops: List[Tuple[Any, ...]]) -> List[Any]:
    """Every result (or exception type), the stream of taken bytes and the final counters."""
    wb = m.WriteBuffer()
    log: List[Any] = []
    stream = bytearray()
    for op in ops:
        kind, args = op[0], op[1:]
        try:
            if kind == "write":
                log.append(wb.write(*args))
            elif kind == "publish":
                topic, payload, qos, pid, retain, dup, protocol, max_size = args
                log.append(wb.append_publish(topic, payload, qos, pid if qos else 0, retain,
                                             dup and qos > 0, protocol, max_size=max_size))
            elif kind == "many":
                topic, items, retain, protocol, max_size = args
                log.append(wb.append_publish_many(topic, items, retain, protocol,
                                                  max_size=max_size))
            elif kind == "ack":
                log.append(wb.append_ack(*args))
            elif kind == "take":
                out = wb.take()
                stream += out
                log.append(bytes(out))
            elif kind == "discard":
                log.append(wb.discard())
            else:
                log.append(wb.peek())
        except Exception as exc:  # noqa: BLE001
            log.append(type(exc).__name__)
        assert wb.position - wb.taken == len(wb) == len(wb.peek())
        assert log[-1] == wb.position or not isinstance(log[-1], int) or kind == "discard"
    return [log, bytes(stream), wb.peek(), wb.position, wb.taken]


@given(operations)
def test_random_operations_agree_across_twins(both, ops):
    c, py = both
    assert _run(c, ops) == _run(py, ops)


@given(operations)
def test_random_operations_match_the_module_encoders(py, ops):
    # A WriteBuffer is just a bytearray the module functions append to, plus a counter.
    wb = py.WriteBuffer()
    mirror = bytearray()
    for op in ops:
        kind, args = op[0], op[1:]
        if kind == "write":
            wb.write(args[0])
            mirror += args[0]
        elif kind == "publish":
            topic, payload, qos, pid, retain, dup, protocol, _max = args
            call = (topic, payload, qos, pid if qos else 0, retain, dup and qos > 0, protocol)
            wb.append_publish(*call)
            py.append_publish(mirror, *call)
        elif kind == "many":
            topic, items, retain, protocol, _max = args
            wb.append_publish_many(topic, items, retain, protocol)
            py.append_publish_many(mirror, topic, items, retain, protocol)
        elif kind == "ack":
            try:
                packet = py.encode_ack(*args)
            except ValueError:  # a reason code this packet or protocol has not: the C test's job
                continue
            wb.append_ack(*args)
            mirror += packet
    assert wb.peek() == bytes(mirror) and wb.position == len(mirror)


# ------------------------------------------------------------------ the automatic-alias path

ALIAS_SHAPES = [(0, 0, False, False), (0, 0, True, False), (1, 9, False, True), (2, 65535, True, False)]


@pytest.mark.parametrize("topic", ["a/b", ""])
@pytest.mark.parametrize("shape", ALIAS_SHAPES)
@pytest.mark.parametrize("alias", [1, 300, 65535])
def test_append_publish_alias_bytes_equal_the_dict_form(codec, topic, shape, alias):
    """The alias fast path writes exactly what the general encoder writes for
    ``properties={"topic_alias": alias}``, with the topic or (empty) without it."""
    qos, packet_id, retain, dup = shape
    fast, general = codec.WriteBuffer(), codec.WriteBuffer()
    assert fast.append_publish_alias(topic, b"p" * 64, qos, packet_id, retain, dup, alias) == \
        general.append_publish(topic, b"p" * 64, qos, packet_id, retain, dup, 5,
                               {"topic_alias": alias})
    assert fast.peek() == general.peek()
    assert codec.StreamDecoder(5).feed(fast.peek())[0].properties == {"topic_alias": alias}


@pytest.mark.parametrize("args, error", [
    (("a/b", b"x", 0, 0, False, False, 0), ValueError),
    (("a/b", b"x", 0, 0, False, False, 65536), ValueError),
    (("a/b", b"x", 0, 0, False, False, "1"), TypeError),
    (("a/+", b"x", 0, 0, False, False, 1), InvalidTopic),
    (("a/b", b"x", "1", 0, False, False, 1), TypeError),
    (("a/b", b"x", 1, 0, False, False, 1), ValueError),  # QoS 1 needs a packet id
    (("a/b", b"x", 0, 0, "yes", False, 1), TypeError),
])
def test_append_publish_alias_refuses_what_the_general_path_refuses(both, args, error):
    messages = []
    for codec in both:
        buf = codec.WriteBuffer()
        with pytest.raises(error) as info:
            buf.append_publish_alias(*args)
        assert len(buf) == 0
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_append_publish_alias_max_size(codec):
    buf = codec.WriteBuffer()
    with pytest.raises(PayloadTooLarge):
        buf.append_publish_alias("a/b", b"x" * 64, 0, 0, False, False, 1, 20)
    assert len(buf) == 0 and buf.position == 0
