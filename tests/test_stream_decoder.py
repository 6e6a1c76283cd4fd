"""The incremental decoder: any chunking of the same bytes gives the same packets; leftovers are
kept and reported; a packet over ``max_packet_size`` is refused from its header alone."""
from __future__ import annotations

import random
import re

import pytest

from mqttfast.errors import MalformedPacket, PacketTooLarge
from packet_cases import ALL_CASES


def mixed_stream(m, protocol):
    """Many packets of every kind valid in ``protocol``, and their concatenated encoding."""
    packets = [build(m) for _, proto, build in ALL_CASES if proto == protocol]
    # Plus a run of publishes of varied sizes (1- to 3-byte remaining lengths).
    for i, size in enumerate([0, 1, 120, 125, 126, 127, 128, 300, 16_380, 16_384, 20_000]):
        qos = i % 3
        packets.append(m.Publish(f"sensors/{i}", bytes([i]) * size, qos, i + 1 if qos else 0,
                                 retain=bool(i & 1)))
    packets += [m.PingReq(), m.PingResp(), m.PingReq()]
    random.Random(protocol).shuffle(packets)
    return packets, b"".join(m.encode(p, protocol) for p in packets)


def feed_all(decoder, chunks):
    out = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out


PROTOCOLS = [3, 4, 5]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_whole(codec, protocol):
    packets, wire = mixed_stream(codec, protocol)
    decoder = codec.StreamDecoder(protocol)
    assert decoder.feed(wire) == packets
    assert decoder.buffered == 0
    assert decoder.feed(b"") == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_byte_by_byte(codec, protocol):
    packets, wire = mixed_stream(codec, protocol)
    decoder = codec.StreamDecoder(protocol)
    out = []
    for i in range(len(wire)):
        got = decoder.feed(wire[i:i + 1])
        assert len(got) <= 1
        out += got
    assert out == packets
    assert decoder.buffered == 0


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_random_chunks(codec, protocol, seed):
    packets, wire = mixed_stream(codec, protocol)
    rng = random.Random(seed)
    chunks, pos = [], 0
    while pos < len(wire):
        size = rng.choice([1, 2, 3, 5, 7, 64, 1000, 30_000])
        chunks.append(wire[pos:pos + size])
        pos += size
    decoder = codec.StreamDecoder(protocol)
    assert feed_all(decoder, chunks) == packets
    assert decoder.buffered == 0


@pytest.mark.parametrize("kind", ["bytearray", "memoryview", "memoryview-of-bytearray"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_buffer_types(codec, protocol, kind):
    packets, wire = mixed_stream(codec, protocol)
    wrap = {"bytearray": bytearray,
            "memoryview": memoryview,
            "memoryview-of-bytearray": lambda b: memoryview(bytearray(b))}[kind]
    rng = random.Random(99)
    decoder = codec.StreamDecoder(protocol)
    out, pos = [], 0
    while pos < len(wire):
        size = rng.randint(1, 4000)
        out += decoder.feed(wrap(wire[pos:pos + size]))
        pos += size
    assert out == packets
    assert all(type(p.payload) is bytes for p in out if type(p).__name__ == "Publish")


def test_decoder_copies_what_it_keeps(codec):
    # The caller may reuse its receive buffer (recv_into) right after feed() returns: neither the
    # decoded payloads nor the buffered tail may point into it.
    wire = codec.encode_publish("t", b"first") + codec.encode_publish("t", b"second")
    cut = len(wire) - 3
    recv = bytearray(wire[:cut])
    decoder = codec.StreamDecoder()
    first = decoder.feed(memoryview(recv))
    recv[:] = b"\xff" * len(recv)  # the caller overwrites its buffer
    assert first == [codec.Publish("t", b"first")]
    assert decoder.buffered == cut - len(codec.encode_publish("t", b"first"))
    recv = bytearray(wire[cut:])
    second = decoder.feed(recv)
    recv[:] = b"\x00" * len(recv)
    assert second == [codec.Publish("t", b"second")]
    assert first[0].payload == b"first" and second[0].payload == b"second"


def test_buffered_reports_leftovers(codec):
    one = codec.encode_publish("a/b", b"x" * 200, 1, 1)  # 2-byte remaining length
    two = codec.encode(codec.PingReq())
    decoder = codec.StreamDecoder()
    assert decoder.buffered == 0
    assert decoder.feed(one[:1]) == []
    assert decoder.buffered == 1  # only the first header byte
    assert decoder.feed(one[1:2]) == []
    assert decoder.buffered == 2  # half of the remaining length
    assert decoder.feed(one[2:50]) == []
    assert decoder.buffered == 50
    assert decoder.feed(one[50:] + two[:1]) == [codec.Publish("a/b", b"x" * 200, 1, 1)]
    assert decoder.buffered == 1
    assert decoder.feed(two[1:]) == [codec.PingReq()]
    assert decoder.buffered == 0


def test_many_packets_in_one_feed_with_a_tail(codec):
    pings = codec.encode(codec.PingResp()) * 1000
    tail = codec.encode_publish("t", b"abc")[:4]
    decoder = codec.StreamDecoder()
    assert decoder.feed(pings + tail) == [codec.PingResp()] * 1000
    assert decoder.buffered == 4


def test_incomplete_is_not_an_error(codec):
    wire = codec.encode(codec.Connect("abc", 5, properties={"receive_maximum": 5}), 5)
    for cut in range(len(wire)):
        decoder = codec.StreamDecoder(5)
        assert decoder.feed(wire[:cut]) == []
        assert decoder.buffered == cut


def test_protocol_is_checked(codec):
    for bad in (0, 2, 6):
        with pytest.raises(ValueError, match="protocol"):
            codec.StreamDecoder(bad)


def test_auth_only_in_v5_stream(codec):
    assert codec.StreamDecoder(5).feed(b"\xf0\x00") == [codec.Auth()]
    with pytest.raises(MalformedPacket, match="reserved packet type 15"):
        codec.StreamDecoder(4).feed(b"\xf0\x00")


# --------------------------------------------------------------------------- max_packet_size

def test_max_packet_size_refuses_from_the_header(codec):
    decoder = codec.StreamDecoder(max_packet_size=1024)
    header = b"\x30" + codec.encode_remaining_length(200_000_000)
    assert len(header) == 5
    with pytest.raises(PacketTooLarge, match="1024"):
        decoder.feed(header)  # five bytes are enough: the body never has to arrive
    assert decoder.buffered <= len(header)  # nothing beyond the header was kept


def test_max_packet_size_refuses_header_split_across_feeds(codec):
    decoder = codec.StreamDecoder(max_packet_size=100)
    header = b"\x30" + codec.encode_remaining_length(268_435_455)
    for i in range(len(header) - 1):
        assert decoder.feed(header[i:i + 1]) == []
    with pytest.raises(PacketTooLarge):
        decoder.feed(header[-1:])
    assert decoder.buffered <= len(header)


def test_max_packet_size_is_the_whole_packet(codec):
    # The limit counts the fixed header too (MQTT 5's Maximum Packet Size).
    wire = codec.encode_publish("t", b"x" * 100)
    assert len(wire) == 105
    assert codec.StreamDecoder(max_packet_size=105).feed(wire) == [codec.Publish("t", b"x" * 100)]
    with pytest.raises(PacketTooLarge):
        codec.StreamDecoder(max_packet_size=104).feed(wire)
    with pytest.raises(PacketTooLarge):
        codec.StreamDecoder(max_packet_size=104).feed(wire[:2])  # header only
    # ... for every packet type, not just PUBLISH
    with pytest.raises(PacketTooLarge):
        codec.StreamDecoder(max_packet_size=3).feed(codec.encode(codec.PubAck(1)))
    assert codec.StreamDecoder(max_packet_size=4).feed(codec.encode(codec.PubAck(1))) == \
        [codec.PubAck(1)]


def test_max_packet_size_after_good_packets(codec):
    decoder = codec.StreamDecoder(max_packet_size=50)
    good = codec.encode_publish("t", b"ok")
    assert decoder.feed(good) == [codec.Publish("t", b"ok")]
    with pytest.raises(PacketTooLarge):
        decoder.feed(b"\x30\x80\x01")  # 128 bytes announced
    assert issubclass(PacketTooLarge, MalformedPacket)


def test_malformed_length_in_stream(codec):
    with pytest.raises(MalformedPacket, match="longer than 4 bytes"):
        codec.StreamDecoder().feed(b"\x30\xff\xff\xff\xff")


def test_repeated_and_alternating_topics(codec):
    # Topics repeat in real streams (and the C twin caches the last one): make sure a cached topic
    # is only reused for the very same bytes, in the stream decoder and in decode().
    topics = ["a/b", "a/b", "a/c", "a/b", "a/bb", "a/b", "é", "é", "\u00e9\u00e9", "a/b"]
    packets = [codec.Publish(t, t.encode() * 2, 1, i + 1) for i, t in enumerate(topics)]
    packets.insert(3, codec.Publish("", b"alias", properties={"topic_alias": 4}))
    wire = [codec.encode(p, 5) for p in packets]
    decoder = codec.StreamDecoder(5)
    assert [p for w in wire for p in decoder.feed(w)] == packets
    assert codec.StreamDecoder(5).feed(b"".join(wire)) == packets
    assert [codec.decode(w, 5) for w in wire] == packets
    # After "a/b" was decoded (and cached), a same-length wildcard or bad topic is still refused.
    for bad, match in [(b"a/+", "wildcard"), (b"a/\x00", "U+0000"), (b"a/\xff", "UTF-8")]:
        frame = b"\x30" + bytes([2 + len(bad)]) + len(bad).to_bytes(2, "big") + bad
        assert codec.decode(codec.encode_publish("a/b", b""))
        with pytest.raises(MalformedPacket, match=re.escape(match)):
            codec.decode(frame)
        decoder = codec.StreamDecoder()
        assert decoder.feed(codec.encode_publish("a/b", b"")) == [codec.Publish("a/b")]
        with pytest.raises(MalformedPacket, match=re.escape(match)):
            decoder.feed(frame)
    # and the encoder's own "last topic" shortcut never lets a bad topic through
    topic = "x/y"
    assert codec.encode_publish(topic, b"") == codec.encode_publish(topic, b"")
    for bad in ("x/+", "x/#", "", "x\x00"):
        with pytest.raises(ValueError):
            codec.encode_publish(bad, b"")
        assert codec.decode(codec.encode_publish(topic, b"1")).topic == topic


@pytest.mark.parametrize("limit", [-1, 0, 1])
def test_max_packet_size_below_two_is_refused(codec, limit):
    # The smallest MQTT packet (PINGREQ) is 2 bytes: a smaller limit can only be a mistake.
    with pytest.raises(ValueError, match="max_packet_size"):
        codec.StreamDecoder(4, max_packet_size=limit)
