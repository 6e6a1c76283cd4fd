"""The compiled hot paths above the codec, in both twins: ``Qos0Path`` (the session's "a QoS 0
publish is only bytes" switch), ``Publisher`` (the client's ``publish()``), ``all_plain_qos0`` and
``deliver`` (the bulk receive path), and decoded PUBLISH packets kept out of the cyclic GC."""
from __future__ import annotations

import gc
import threading
from typing import Any, List, Tuple

import pytest

from mqttfast.errors import InvalidTopic

P64 = b"p" * 64


class FakeConn:
    """What a Publisher needs of a connection: a lock, ``flush_queued`` and ``kick()``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flush_queued = False
        self.kicks = 0

    def kick(self) -> None:
        assert not self.lock.locked(), "kick() must run after the lock is released"
        self.kicks += 1
        self.flush_queued = True


def make_publisher(codec: Any, mode: int = 1, protocol: int = 4, max_buffer: int = 1 << 20):
    out = codec.WriteBuffer()
    path = codec.Qos0Path(out, protocol)
    path.mode = mode
    calls: List[Tuple[Any, ...]] = []
    drains: List[int] = []

    def fallback(*args: Any) -> str:
        calls.append(args)
        return "slow"

    pub = codec.Publisher(path, fallback, lambda mark, taken: codec.StreamMark(mark, taken),
                          max_buffer, lambda: drains.append(len(out)))
    return out, path, pub, calls, drains


# ---------------------------------------------------------------------- Qos0Path


def test_plain_mode_appends_exactly_the_encoders_bytes(codec):
    for protocol in (3, 4, 5):
        out = codec.WriteBuffer()
        path = codec.Qos0Path(out, protocol)
        path.mode = 1
        assert path.append("a/b", P64, False) == out.position
        assert path.append("a/b", b"x", True) == out.position
        assert out.peek() == (codec.encode_publish("a/b", P64, 0, 0, False, False, protocol)
                              + codec.encode_publish("a/b", b"x", 0, 0, True, False, protocol))


def test_off_mode_takes_nothing(codec):
    out = codec.WriteBuffer()
    path = codec.Qos0Path(out, 4)
    assert path.mode == 0
    assert path.append("a/b", P64, False) == -1
    assert len(out) == 0


def test_alias_mode_sends_known_topics_as_their_alias_alone(codec):
    out = codec.WriteBuffer()
    path = codec.Qos0Path(out, 5)
    path.mode = 2
    path.aliases = {"known/topic": 7}
    assert path.append("other/topic", P64, False) == -1  # the session teaches new topics
    assert path.append(b"known/topic", P64, False) == -1  # not a str: the session's error
    assert len(out) == 0
    assert path.append("known/topic", P64, False) == out.position
    assert out.peek() == codec.encode_publish("", P64, 0, 0, False, False, 5, {"topic_alias": 7})
    path.aliases = None
    assert path.append("known/topic", P64, False) == -1


def test_plain_mode_keeps_every_argument_check(codec):
    out = codec.WriteBuffer()
    path = codec.Qos0Path(out, 4)
    path.mode = 1
    with pytest.raises(InvalidTopic):
        path.append("a/+", P64, False)
    with pytest.raises(TypeError):
        path.append("a/b", P64, 1)  # retain must be a bool
    with pytest.raises(TypeError):
        path.append("a/b", 12, False)
    assert len(out) == 0  # nothing half-written


def test_bad_protocol_is_refused(codec):
    path = codec.Qos0Path(codec.WriteBuffer(), 4)
    with pytest.raises(ValueError):
        path.protocol = 6
    with pytest.raises(TypeError):
        codec.Qos0Path(object(), 4)


# ---------------------------------------------------------------------- Publisher


def test_unbound_publisher_falls_back(codec):
    out, path, pub, calls, _ = make_publisher(codec)
    assert pub("a/b", P64) == "slow"
    assert calls == [("a/b", P64, 0, False, None)]
    assert len(out) == 0


def test_fast_publish_shares_one_mark_per_write_and_kicks_once(codec):
    out, path, pub, calls, _ = make_publisher(codec)
    conn = FakeConn()
    pub.bind(conn.lock, conn)
    h1 = pub("a/b", P64)
    h2 = pub("a/b", P64, 0, False, None)
    assert calls == []
    assert h1 is h2 and h2._mark == out.position and h2._taken == 0
    assert conn.kicks == 1  # the second saw a flush already queued
    out.take()
    conn.flush_queued = False
    h3 = pub("a/b", P64)
    assert h3 is not h1 and h1._mark == h3._taken  # the old mark stays where it was
    assert h3._mark == out.position and conn.kicks == 2
    assert pub.mark(out.position) is h3  # what the client's slow path uses under the lock


@pytest.mark.parametrize("args", [
    ("a/b", P64, 1),  # QoS 1: the session's
    ("a/b", P64, 0, False, {"payload_format_indicator": 1}),  # properties: the session's
    ("a/b", P64, False),  # qos=False is not the int 0: the session's (which refuses it)
    ("a/b", P64, 0.0),
])
def test_anything_but_plain_qos0_goes_to_the_fallback(codec, args):
    out, path, pub, calls, _ = make_publisher(codec)
    conn = FakeConn()
    pub.bind(conn.lock, conn)
    assert pub(*args) == "slow"
    assert len(calls) == 1 and len(out) == 0 and conn.kicks == 0
    assert not conn.lock.locked()


def test_a_topic_without_alias_goes_to_the_fallback_with_the_lock_released(codec):
    out, path, pub, calls, _ = make_publisher(codec, mode=2, protocol=5)
    path.aliases = {}
    conn = FakeConn()
    pub.bind(conn.lock, conn)
    assert pub("new/topic", P64) == "slow"
    assert calls == [("new/topic", P64, 0, False, None)] and not conn.lock.locked()


def test_a_bad_argument_raises_and_releases_the_lock(codec):
    out, path, pub, calls, _ = make_publisher(codec)
    conn = FakeConn()
    pub.bind(conn.lock, conn)
    with pytest.raises(InvalidTopic):
        pub("a/#", P64)
    assert not conn.lock.locked() and len(out) == 0 and conn.kicks == 0
    pub.unbind()
    assert pub("a/b", P64) == "slow"


def test_over_max_buffer_the_writer_is_drained(codec):
    out, path, pub, calls, drains = make_publisher(codec, max_buffer=200)
    conn = FakeConn()
    pub.bind(conn.lock, conn)
    pub("a/b", P64)
    pub("a/b", P64)
    assert drains == []
    pub("a/b", P64)  # 3 x 71 bytes > 200
    assert drains == [len(out)] and len(out) > 200


def test_publishes_from_many_threads_all_arrive_whole(codec):
    out, path, pub, calls, _ = make_publisher(codec)
    conn = FakeConn()
    pub.bind(conn.lock, conn)
    taken = bytearray()

    def writer(i: int) -> None:
        for n in range(500):
            pub(f"t/{i}", n.to_bytes(2, "big"))
            if n % 50 == 0:
                with conn.lock:
                    taken.extend(out.take())

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken.extend(out.take())
    packets = codec.StreamDecoder(4).feed(bytes(taken))
    assert len(packets) == 2000
    for i in range(4):
        mine = [int.from_bytes(p.payload, "big") for p in packets if p.topic == f"t/{i}"]
        assert mine == list(range(500))  # each thread's own order kept


# ---------------------------------------------------------------------- receive


def test_all_plain_qos0(codec):
    plain = [codec.Publish("a", b"1"), codec.Publish("b", b"2", retain=True)]
    assert codec.all_plain_qos0(plain) and codec.all_plain_qos0([])
    assert not codec.all_plain_qos0(plain + [codec.Publish("a", b"x", 1, 3)])
    assert not codec.all_plain_qos0([codec.Publish("a", b"", 0, 0, properties={"topic_alias": 1})])
    assert not codec.all_plain_qos0(plain + [codec.PubAck(3)])


def test_deliver_goes_on_after_a_failing_callback(codec):
    seen: List[bytes] = []
    errors: List[Exception] = []

    def callback(m: Any) -> None:
        seen.append(m.payload)
        if m.payload == b"2":
            raise ValueError("boom")

    msgs = [codec.Publish("a", b"%d" % i) for i in range(5)]
    codec.deliver(callback, msgs, errors.append)
    assert seen == [b"0", b"1", b"2", b"3", b"4"]
    assert [str(e) for e in errors] == ["boom"]


def test_deliver_lets_base_exceptions_through(codec):
    def callback(m: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        codec.deliver(callback, [codec.Publish("a", b"")], lambda e: None)


def test_decoded_publish_is_not_walked_by_the_cyclic_gc(both):
    c_codec = both[0]  # the pure twin's packets are plain objects the collector tracks
    frame = c_codec.encode_publish("a/b", P64, 1, 5, False, False, 5,
                                   {"user_property": [("k", "v")]})
    (pkt,) = c_codec.StreamDecoder(5).feed(frame)
    assert not gc.is_tracked(pkt)
    assert pkt.payload == P64 and pkt.properties == {"user_property": [("k", "v")]}
    del pkt
    gc.collect()  # untracked objects are freed by reference counting like any other


# ---------------------------------------------------------------------- through the Client


def test_client_publish_is_the_compiled_path_and_a_subclass_keeps_its_own(broker):
    import mqttfast
    from mqttfast.codec import Publisher

    seen: List[Any] = []

    class Counting(mqttfast.Client):
        def publish(self, *args: Any, **kw: Any) -> Any:  # type: ignore[override]
            seen.append(args)
            return super().publish(*args, **kw)

    plain = mqttfast.Client(client_id="hot-plain")
    sub = Counting(client_id="hot-sub")
    try:
        assert isinstance(plain.publish, Publisher)
        assert not isinstance(sub.publish, Publisher)
        with pytest.raises(mqttfast.NotConnected):
            plain.publish("hot/t", b"x")  # before connect: the full path's error
        plain.connect("127.0.0.1", broker.port)
        sub.connect("127.0.0.1", broker.port)
        assert plain.publish("hot/t", b"x").wait(5)
        assert sub.publish("hot/t", b"y").wait(5)
        assert seen == [("hot/t", b"y")]
    finally:
        plain.close()
        sub.close()


def test_in_flight_records_without_properties_are_not_walked_by_the_gc(both):
    import sys

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from session_helpers import connected

    from mqttfast import codec
    from mqttfast.session import Outgoing

    s, _ = connected(4, max_inflight=10)
    plain = s.publish("a/b", b"x", 1)
    with_props = s.publish_record(s.make_record("a/b", b"y", 1), 0.0)

    class Extra(Outgoing):
        __slots__ = ("note",)  # a subclass that could hold anything: left to the GC

    extra = s.publish("a/b", b"z", 1, cls=Extra)
    assert gc.is_tracked(extra) and gc.is_tracked(with_props)
    assert gc.is_tracked(plain) == (codec.IMPLEMENTATION == "python")  # only C can untrack
    (ack,) = both[0].StreamDecoder(4).feed(both[0].encode_ack(4, plain.packet_id))
    assert not gc.is_tracked(ack)
