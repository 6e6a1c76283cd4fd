"""Bytes that are not MQTT are refused with MalformedPacket (and a message that says why) by both
twins, through decode() and StreamDecoder.feed(); caller mistakes raise ValueError at the call."""
from __future__ import annotations

import re

import pytest

from mqttfast.constants import PacketType as P
from mqttfast.errors import InvalidTopic, MalformedPacket, MQTTError, PayloadTooLarge


def frame(first: int, body: bytes) -> bytes:
    """A fixed header with a correct remaining length in front of ``body`` (hand-rolled varint)."""
    n, length = len(body), bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        length.append(digit | (0x80 if n else 0))
        if not n:
            return bytes([first]) + bytes(length) + body


def s(text: bytes) -> bytes:
    """An MQTT string/binary field: 2-byte length, then the raw bytes."""
    return len(text).to_bytes(2, "big") + text


def connect(flags: int, rest: bytes = s(b"cid"), name: bytes = b"MQTT", level: int = 4,
            keepalive: bytes = b"\x00\x3c") -> bytes:
    return frame(0x10, s(name) + bytes([level, flags]) + keepalive + rest)


def pub5(props: bytes, topic: bytes = b"t", payload: bytes = b"") -> bytes:
    """A QoS 0 MQTT 5 PUBLISH with a raw property block (length prefix included by the caller)."""
    return frame(0x30, s(topic) + props + payload)


def props(raw: bytes) -> bytes:
    assert len(raw) < 128
    return bytes([len(raw)]) + raw


# (id, protocol, bytes, literal fragment of the message). Every one is a whole frame, so the stream
# decoder must refuse it too.
MALFORMED = [
    # ---- fixed header
    ("remaining-length-5-bytes", 4, b"\x30\xff\xff\xff\xff\x7f", "longer than 4 bytes"),
    ("remaining-length-5-bytes-zero-continuation", 4, b"\xc0\x80\x80\x80\x80\x00",
     "longer than 4 bytes"),
    ("reserved-type-0", 4, b"\x00\x00", "reserved packet type 0"),
    ("reserved-type-0-v5", 5, b"\x00\x00", "reserved packet type 0"),
    ("type-15-v4", 4, b"\xf0\x00", "reserved packet type 15"),
    ("type-15-v3", 3, b"\xf0\x00", "reserved packet type 15"),
    ("connect-flags", 4, b"\x11" + connect(0x02)[1:], "CONNECT has fixed-header flags"),
    ("connack-flags", 4, b"\x21\x02\x00\x00", "CONNACK has fixed-header flags"),
    ("puback-flags", 4, b"\x42\x02\x00\x01", "PUBACK has fixed-header flags"),
    ("pubrec-flags", 4, b"\x52\x02\x00\x01", "PUBREC has fixed-header flags"),
    ("pubrel-flags-0", 4, b"\x60\x02\x00\x01", "PUBREL has fixed-header flags"),
    ("pubrel-flags-3", 5, b"\x63\x02\x00\x01", "PUBREL has fixed-header flags"),
    ("pubcomp-flags", 4, b"\x72\x02\x00\x01", "PUBCOMP has fixed-header flags"),
    ("subscribe-flags-0", 4, frame(0x80, b"\x00\x01" + s(b"a/b") + b"\x01"),
     "SUBSCRIBE has fixed-header flags"),
    ("suback-flags", 4, b"\x92\x03\x00\x01\x00", "SUBACK has fixed-header flags"),
    ("unsubscribe-flags-0", 4, frame(0xA0, b"\x00\x01" + s(b"a")),
     "UNSUBSCRIBE has fixed-header flags"),
    ("unsuback-flags", 4, b"\xb1\x02\x00\x01", "UNSUBACK has fixed-header flags"),
    ("pingreq-flags", 4, b"\xc1\x00", "PINGREQ has fixed-header flags"),
    ("pingresp-flags", 4, b"\xd8\x00", "PINGRESP has fixed-header flags"),
    ("disconnect-flags", 4, b"\xe2\x00", "DISCONNECT has fixed-header flags"),
    ("auth-flags", 5, b"\xf1\x00", "AUTH has fixed-header flags"),
    # ---- PUBLISH
    ("publish-qos3", 4, frame(0x36, s(b"t") + b"\x00\x01"), "QoS 3"),
    ("publish-qos3-dup-retain", 5, frame(0x3F, s(b"t") + b"\x00\x01\x00"), "QoS 3"),
    ("publish-dup-qos0", 4, frame(0x38, s(b"t")), "DUP"),
    ("publish-packet-id-0-qos1", 4, frame(0x32, s(b"t") + b"\x00\x00"), "packet id 0"),
    ("publish-packet-id-0-qos2", 5, frame(0x34, s(b"t") + b"\x00\x00\x00"), "packet id 0"),
    ("publish-no-topic-length", 4, b"\x30\x01\x00", "topic length of PUBLISH runs past"),
    ("publish-empty-body", 4, b"\x30\x00", "runs past the end"),
    ("publish-topic-past-end", 4, b"\x30\x03\x00\x05a", "runs past the end"),
    ("publish-topic-past-end-max", 4, b"\x30\x04\xff\xffab", "runs past the end"),
    ("publish-packet-id-past-end", 4, frame(0x32, s(b"t") + b"\x00"), "packet id of PUBLISH"),
    ("publish-topic-overlong-utf8", 4, frame(0x30, s(b"\xc0\xaf")), "UTF-8"),
    ("publish-topic-overlong-3-byte", 4, frame(0x30, s(b"\xe0\x80\xaf")), "UTF-8"),
    ("publish-topic-surrogate", 4, frame(0x30, s(b"a\xed\xa0\x80")), "UTF-8"),
    ("publish-topic-low-surrogate", 4, frame(0x30, s(b"\xed\xbf\xbf")), "UTF-8"),
    ("publish-topic-truncated-utf8", 4, frame(0x30, s(b"a\xe2\x82") + b"payload"), "UTF-8"),
    ("publish-topic-lone-continuation", 4, frame(0x30, s(b"\x80")), "UTF-8"),
    ("publish-topic-beyond-unicode", 4, frame(0x30, s(b"\xf4\x90\x80\x80")), "UTF-8"),
    ("publish-topic-invalid-byte-ff", 4, frame(0x30, s(b"a\xff")), "UTF-8"),
    ("publish-topic-nul", 4, frame(0x30, s(b"a\x00b")), "U+0000"),
    ("publish-topic-nul-v5", 5, frame(0x30, s(b"\x00") + b"\x00"), "U+0000"),
    ("publish-topic-plus", 4, frame(0x30, s(b"a/+")), "wildcard"),
    ("publish-topic-hash", 4, frame(0x30, s(b"a/#")), "wildcard"),
    ("publish-topic-hash-v5-qos1", 5, frame(0x32, s(b"#") + b"\x00\x01\x00"), "wildcard"),
    ("publish-empty-topic-v4", 4, frame(0x30, s(b"") + b"payload"), "empty topic"),
    ("publish-empty-topic-v3", 3, frame(0x30, s(b"")), "empty topic"),
    ("publish-empty-topic-v5-no-alias", 5, frame(0x30, s(b"") + b"\x00"), "no topic alias"),
    ("publish-empty-topic-v5-other-props", 5,
     pub5(props(b"\x02\x00\x00\x00\x01"), topic=b""), "no topic alias"),
    ("publish-v5-no-property-length", 5, frame(0x30, s(b"t")), "property length of PUBLISH"),
    ("publish-v5-properties-past-end", 5, pub5(b"\x05\x02\x00"), "run past the end"),
    ("publish-v5-property-length-5-bytes", 5, pub5(b"\x80\x80\x80\x80\x01"),
     "longer than 4 bytes"),
    ("publish-v5-unknown-property", 5, pub5(props(b"\x7f\x00")),
     "unknown property identifier 0x7f"),
    ("publish-v5-property-id-0", 5, pub5(props(b"\x00")), "unknown property identifier 0x00"),
    ("publish-v5-duplicate-property", 5,
     pub5(props(b"\x02\x00\x00\x00\x01\x02\x00\x00\x00\x02")), "appears twice"),
    ("publish-v5-duplicate-topic-alias", 5, pub5(props(b"\x23\x00\x01\x23\x00\x02")),
     "appears twice"),
    ("publish-v5-property-not-allowed", 5, pub5(props(b"\x11\x00\x00\x00\x01")),
     "session_expiry_interval is not allowed in PUBLISH"),
    ("publish-v5-will-delay-not-allowed", 5, pub5(props(b"\x18\x00\x00\x00\x01")),
     "not allowed in PUBLISH"),
    ("publish-v5-bad-boolean", 5, pub5(props(b"\x01\x02")), "must be 0 or 1"),
    ("publish-v5-subscription-id-0", 5, pub5(props(b"\x0b\x00")), "must not be 0"),
    ("publish-v5-u32-property-past-end", 5, pub5(props(b"\x02\x00\x00")),
     "message_expiry_interval runs past"),
    ("publish-v5-string-property-past-end", 5, pub5(props(b"\x03\x00\x09ab")),
     "content_type"),
    ("publish-v5-string-property-bad-utf8", 5, pub5(props(b"\x03" + s(b"\xed\xa0\x80"))),
     "UTF-8"),
    ("publish-v5-user-property-bad-utf8", 5, pub5(props(b"\x26" + s(b"k") + s(b"\xc0\x80"))),
     "UTF-8"),
    ("publish-v5-user-property-value-missing", 5, pub5(props(b"\x26" + s(b"k"))),
     "user_property value"),
    ("publish-v5-subscription-id-5-bytes", 5, pub5(props(b"\x0b\x80\x80\x80\x80\x01")),
     "longer than 4 bytes"),
    # ---- acknowledgements
    ("puback-packet-id-0", 4, b"\x40\x02\x00\x00", "packet id 0"),
    ("pubrec-packet-id-0", 4, b"\x50\x02\x00\x00", "packet id 0"),
    ("pubrel-packet-id-0", 4, b"\x62\x02\x00\x00", "packet id 0"),
    ("pubcomp-packet-id-0", 5, b"\x70\x02\x00\x00", "packet id 0"),
    ("puback-length-3-v4", 4, b"\x40\x03\x00\x01\x00", "remaining length 2"),
    ("puback-length-1-v4", 4, b"\x40\x01\x00", "remaining length 2"),
    ("puback-length-0-v4", 4, b"\x40\x00", "remaining length 2"),
    ("pubrel-length-3-v3", 3, b"\x62\x03\x00\x01\x00", "remaining length 2"),
    ("puback-length-1-v5", 5, b"\x40\x01\x00", "remaining length"),
    ("puback-v5-bad-reason", 5, b"\x40\x03\x00\x01\x01", "invalid reason code 0x01 in PUBACK"),
    ("pubrel-v5-bad-reason", 5, b"\x62\x03\x00\x01\x10", "invalid reason code 0x10 in PUBREL"),
    ("pubcomp-v5-bad-reason", 5, b"\x70\x03\x00\x01\x80", "invalid reason code 0x80 in PUBCOMP"),
    ("puback-v5-trailing-after-props", 5, b"\x40\x06\x00\x01\x00\x00\xaa\xbb",
     "unexpected bytes at the end of PUBACK"),
    ("puback-v5-props-past-end", 5, b"\x40\x05\x00\x01\x00\x09\x1f", "run past the end"),
    ("puback-v5-prop-not-allowed", 5, b"\x40\x09\x00\x01\x00\x05\x02\x00\x00\x00\x01",
     "not allowed in PUBACK"),
    # ---- CONNECT
    ("connect-bad-protocol-name", 4, connect(0x02, name=b"MQTX"), "unsupported protocol"),
    ("connect-mqtt-level-3", 4, connect(0x02, level=3), "unsupported protocol"),
    ("connect-mqisdp-level-4", 4, connect(0x02, name=b"MQIsdp", level=4), "unsupported protocol"),
    ("connect-level-6", 5, connect(0x02, level=6), "unsupported protocol"),
    ("connect-protocol-name-bad-utf8", 4, connect(0x02, name=b"MQ\xffT"), "UTF-8"),
    ("connect-reserved-flag", 4, connect(0x03), "reserved bit 0"),
    ("connect-will-qos-3", 4, connect(0x1E, s(b"cid") + s(b"w") + s(b"")), "will QoS 3"),
    ("connect-will-qos-without-will", 4, connect(0x0A), "without the will flag"),
    ("connect-will-retain-without-will", 4, connect(0x22), "without the will flag"),
    ("connect-password-without-username-v4", 4, connect(0x42, s(b"cid") + s(b"pw")),
     "password flag set without the username"),
    ("connect-password-without-username-v3", 4,
     connect(0x42, s(b"cid") + s(b"pw"), name=b"MQIsdp", level=3),
     "password flag set without the username"),
    ("connect-client-id-past-end", 4, connect(0x02, b"\x00\x05ab"), "client id"),
    ("connect-client-id-missing", 4, connect(0x02, b""), "client id"),
    ("connect-client-id-surrogate", 4, connect(0x02, s(b"\xed\xa0\x80")), "UTF-8"),
    ("connect-client-id-nul", 4, connect(0x02, s(b"a\x00")), "U+0000"),
    ("connect-keepalive-missing", 4, frame(0x10, s(b"MQTT") + b"\x04\x02\x00"), "keepalive"),
    ("connect-will-topic-missing", 4, connect(0x06), "will topic"),
    ("connect-will-topic-wildcard", 4, connect(0x06, s(b"c") + s(b"w/#") + s(b"x")),
     "wildcards"),
    ("connect-will-topic-empty", 4, connect(0x06, s(b"c") + s(b"") + s(b"x")), "empty"),
    ("connect-will-payload-past-end", 4, connect(0x06, s(b"c") + s(b"w") + b"\x00\x10x"),
     "will payload"),
    ("connect-username-missing", 4, connect(0x82), "username"),
    ("connect-password-missing", 4, connect(0xC2, s(b"c") + s(b"u")), "password"),
    ("connect-trailing-bytes", 4, connect(0x02, s(b"c") + b"\x00"),
     "unexpected bytes at the end of CONNECT"),
    ("connect-v5-no-properties", 5, connect(0x02, b"", level=5), "property length of CONNECT"),
    ("connect-v5-connack-property", 5, connect(0x02, props(b"\x13\x00\x05") + s(b"c"), level=5),
     "server_keep_alive is not allowed in CONNECT"),
    ("connect-v5-bad-boolean", 5, connect(0x02, props(b"\x17\x05") + s(b"c"), level=5),
     "must be 0 or 1"),
    ("connect-v5-receive-maximum-0", 5, connect(0x02, props(b"\x21\x00\x00") + s(b"c"), level=5),
     "must not be 0"),
    ("connect-v5-maximum-packet-size-0", 5,
     connect(0x02, props(b"\x27\x00\x00\x00\x00") + s(b"c"), level=5), "must not be 0"),
    ("connect-v5-duplicate-property", 5,
     connect(0x02, props(b"\x21\x00\x01\x21\x00\x02") + s(b"c"), level=5), "appears twice"),
    ("connect-v5-will-topic-alias", 5,
     connect(0x06, b"\x00" + s(b"c") + props(b"\x23\x00\x01") + s(b"w") + s(b"x"), level=5),
     "topic_alias is not allowed in will properties"),
    ("connect-v5-will-delay-in-connect", 5,
     connect(0x02, props(b"\x18\x00\x00\x00\x01") + s(b"c"), level=5),
     "will_delay_interval is not allowed in CONNECT"),
    # ---- CONNACK
    ("connack-length-3-v4", 4, b"\x20\x03\x00\x00\x00", "CONNACK must have remaining length 2"),
    ("connack-length-1-v4", 4, b"\x20\x01\x00", "CONNACK must have remaining length 2"),
    ("connack-reserved-ack-flags", 4, b"\x20\x02\x02\x00", "reserved bits of the CONNACK flags"),
    ("connack-v4-bad-return-code", 4, b"\x20\x02\x00\x06", "invalid CONNACK return code"),
    ("connack-v5-bad-reason", 5, b"\x20\x03\x00\x01\x00", "invalid reason code 0x01 in CONNACK"),
    ("connack-v5-reserved-ack-flags", 5, b"\x20\x03\x80\x00\x00",
     "reserved bits of the CONNACK flags"),
    ("connack-v5-no-property-length", 5, b"\x20\x02\x00\x00", "property length of CONNACK"),
    ("connack-v5-trailing", 5, b"\x20\x04\x00\x00\x00\x00", "unexpected bytes at the end"),
    ("connack-v5-maximum-qos-2", 5, b"\x20\x05\x00\x00\x02\x24\x02", "must be 0 or 1"),
    ("connack-v5-retain-available-bad", 5, b"\x20\x05\x00\x00\x02\x25\x07", "must be 0 or 1"),
    ("connack-v5-topic-alias-not-allowed", 5, b"\x20\x06\x00\x00\x03\x23\x00\x01",
     "not allowed in CONNACK"),
    # ---- SUBSCRIBE
    ("subscribe-packet-id-0", 4, frame(0x82, b"\x00\x00" + s(b"a") + b"\x00"), "packet id 0"),
    ("subscribe-no-filters", 4, frame(0x82, b"\x00\x01"), "no topic filter"),
    ("subscribe-no-filters-v5", 5, frame(0x82, b"\x00\x01\x00"), "no topic filter"),
    ("subscribe-missing-options", 4, frame(0x82, b"\x00\x01" + s(b"a")), "subscription options"),
    ("subscribe-filter-past-end", 4, frame(0x82, b"\x00\x01\x00\x09a"), "runs past the end"),
    ("subscribe-qos3", 4, frame(0x82, b"\x00\x01" + s(b"a") + b"\x03"), "QoS 3"),
    ("subscribe-v4-reserved-option-bits", 4, frame(0x82, b"\x00\x01" + s(b"a") + b"\x04"),
     "reserved bits"),
    ("subscribe-v3-reserved-option-bits", 3, frame(0x82, b"\x00\x01" + s(b"a") + b"\x80"),
     "reserved bits"),
    ("subscribe-v5-reserved-option-bits", 5, frame(0x82, b"\x00\x01\x00" + s(b"a") + b"\x40"),
     "reserved bits"),
    ("subscribe-v5-retain-handling-3", 5, frame(0x82, b"\x00\x01\x00" + s(b"a") + b"\x30"),
     "retain handling 3"),
    ("subscribe-empty-filter", 4, frame(0x82, b"\x00\x01" + s(b"") + b"\x00"), "empty"),
    ("subscribe-hash-not-last", 4, frame(0x82, b"\x00\x01" + s(b"a/#/b") + b"\x00"), "'#'"),
    ("subscribe-hash-in-level", 4, frame(0x82, b"\x00\x01" + s(b"a#") + b"\x00"), "'#'"),
    ("subscribe-plus-in-level", 4, frame(0x82, b"\x00\x01" + s(b"a/b+") + b"\x00"), "'+'"),
    ("subscribe-filter-nul", 4, frame(0x82, b"\x00\x01" + s(b"a\x00") + b"\x00"), "U+0000"),
    ("subscribe-filter-bad-utf8", 4, frame(0x82, b"\x00\x01" + s(b"\xc3") + b"\x00"), "UTF-8"),
    ("subscribe-bad-shared", 5, frame(0x82, b"\x00\x01\x00" + s(b"$share/g") + b"\x00"),
     "shared subscription"),
    ("subscribe-v5-subscription-id-twice", 5,
     frame(0x82, b"\x00\x01" + props(b"\x0b\x01\x0b\x02") + s(b"a") + b"\x00"), "appears twice"),
    ("subscribe-v5-subscription-id-0", 5,
     frame(0x82, b"\x00\x01" + props(b"\x0b\x00") + s(b"a") + b"\x00"), "must not be 0"),
    # ---- SUBACK
    ("suback-packet-id-0", 4, b"\x90\x03\x00\x00\x00", "packet id 0"),
    ("suback-no-codes", 4, b"\x90\x02\x00\x01", "no return code"),
    ("suback-v4-code-3", 4, b"\x90\x03\x00\x01\x03", "invalid SUBACK return code 0x03"),
    ("suback-v4-code-0x81", 4, b"\x90\x04\x00\x01\x00\x81", "invalid SUBACK return code 0x81"),
    ("suback-v3-code-0x80", 3, b"\x90\x03\x00\x01\x80", "invalid SUBACK return code 0x80"),
    ("suback-v5-code-5", 5, b"\x90\x04\x00\x01\x00\x05", "invalid SUBACK return code 0x05"),
    ("suback-v5-no-codes", 5, b"\x90\x03\x00\x01\x00", "no return code"),
    # ---- UNSUBSCRIBE / UNSUBACK
    ("unsubscribe-packet-id-0", 4, frame(0xA2, b"\x00\x00" + s(b"a")), "packet id 0"),
    ("unsubscribe-no-filters", 4, frame(0xA2, b"\x00\x01"), "no topic filter"),
    ("unsubscribe-bad-filter", 4, frame(0xA2, b"\x00\x01" + s(b"a/#/")), "'#'"),
    ("unsubscribe-filter-past-end", 5, frame(0xA2, b"\x00\x01\x00\x00\x05ab"), "runs past"),
    ("unsuback-packet-id-0", 4, b"\xb0\x02\x00\x00", "packet id 0"),
    ("unsuback-length-3-v4", 4, b"\xb0\x03\x00\x01\x00", "UNSUBACK must have remaining length 2"),
    ("unsuback-length-1-v4", 4, b"\xb0\x01\x00", "UNSUBACK must have remaining length 2"),
    ("unsuback-v5-no-codes", 5, b"\xb0\x03\x00\x01\x00", "no reason code"),
    ("unsuback-v5-bad-code", 5, b"\xb0\x04\x00\x01\x00\x01", "invalid reason code 0x01 in UNSUBACK"),
    # ---- PINGREQ / PINGRESP / DISCONNECT / AUTH
    ("pingreq-length-1", 4, b"\xc0\x01\x00", "PINGREQ must have remaining length 0"),
    ("pingresp-length-2", 5, b"\xd0\x02\x00\x00", "PINGRESP must have remaining length 0"),
    ("disconnect-length-1-v4", 4, b"\xe0\x01\x00", "unexpected bytes at the end of DISCONNECT"),
    ("disconnect-length-2-v3", 3, b"\xe0\x02\x00\x00", "unexpected bytes at the end of DISCONNECT"),
    ("disconnect-v5-bad-reason", 5, b"\xe0\x01\x05", "invalid reason code 0x05 in DISCONNECT"),
    ("disconnect-v5-trailing", 5, b"\xe0\x03\x00\x00\xaa", "unexpected bytes at the end"),
    ("disconnect-v5-props-past-end", 5, b"\xe0\x03\x00\x05\x11", "run past the end"),
    ("disconnect-v5-prop-not-allowed", 5, b"\xe0\x05\x00\x03\x13\x00\x01",
     "not allowed in DISCONNECT"),
    ("auth-v5-bad-reason", 5, b"\xf0\x01\x01", "invalid reason code 0x01 in AUTH"),
    ("auth-v5-prop-not-allowed", 5, b"\xf0\x04\x18\x02\x01\x01", "not allowed in AUTH"),
]

IDS = [case[0] for case in MALFORMED]
assert len(set(IDS)) == len(IDS), "duplicate case id"


@pytest.mark.parametrize("name, protocol, wire, match", MALFORMED, ids=IDS)
def test_decode_refuses(codec, name, protocol, wire, match):
    with pytest.raises(MalformedPacket, match=re.escape(match)):
        codec.decode(wire, protocol)


@pytest.mark.parametrize("name, protocol, wire, match", MALFORMED, ids=IDS)
def test_stream_refuses(codec, name, protocol, wire, match):
    with pytest.raises(MalformedPacket, match=re.escape(match)):
        codec.StreamDecoder(protocol).feed(wire)


@pytest.mark.parametrize("name, protocol, wire, match", MALFORMED, ids=IDS)
def test_stream_refuses_after_good_packets_and_in_pieces(codec, name, protocol, wire, match):
    # The bad packet arrives after a good one, byte by byte: still refused, with the same reason.
    decoder = codec.StreamDecoder(protocol)
    assert decoder.feed(b"\xd0\x00") == [codec.PingResp()]
    with pytest.raises(MalformedPacket, match=re.escape(match)):
        for i in range(len(wire)):
            decoder.feed(wire[i:i + 1])


@pytest.mark.parametrize("name, protocol, wire, match", MALFORMED, ids=IDS)
def test_twins_give_the_same_message(both, name, protocol, wire, match):
    c, py = both
    messages = []
    for m in (c, py):
        with pytest.raises(MalformedPacket) as info:
            m.decode(wire, protocol)
        messages.append((type(info.value), str(info.value)))
    assert messages[0] == messages[1]


# ---- only decode() sees these: the stream decoder waits for more bytes or keeps the extra ones

WHOLE_PACKET_ONLY = [
    ("empty", 4, b"", "empty input"),
    ("first-byte-only", 4, b"\x30", "incomplete fixed header"),
    ("incomplete-remaining-length", 4, b"\x30\x80", "incomplete fixed header"),
    ("incomplete-body", 4, b"\x30\x05\x00\x01", "incomplete packet: 3 bytes missing"),
    ("trailing-bytes", 4, b"\xc0\x00\x30", "1 bytes after the end of the packet"),
    ("two-packets", 4, b"\xc0\x00\xc0\x00", "bytes after the end of the packet"),
    ("trailing-bytes-v5", 5, b"\x40\x02\x00\x01\x30\x05", "2 bytes after the end of the packet"),
]


@pytest.mark.parametrize("name, protocol, wire, match", WHOLE_PACKET_ONLY,
                         ids=[c[0] for c in WHOLE_PACKET_ONLY])
def test_decode_needs_exactly_one_packet(codec, name, protocol, wire, match):
    with pytest.raises(MalformedPacket, match=re.escape(match)):
        codec.decode(wire, protocol)
    decoder = codec.StreamDecoder(protocol)
    got = decoder.feed(wire)  # not an error for a stream
    assert decoder.buffered == len(wire) - sum(len(codec.encode(p, protocol)) for p in got)


# --------------------------------------------------------------------------- caller mistakes

def test_encode_publish_refuses_bad_topics(codec):
    with pytest.raises(InvalidTopic, match="wildcards"):
        codec.encode_publish("a/+", b"")
    with pytest.raises(InvalidTopic, match="wildcards"):
        codec.encode_publish("a/#", b"")
    with pytest.raises(InvalidTopic, match="wildcards"):
        codec.encode_publish("+", b"", 1, 1, protocol=5)
    with pytest.raises(InvalidTopic, match="must not be empty"):
        codec.encode_publish("", b"")
    with pytest.raises(InvalidTopic, match="must not be empty"):
        codec.encode_publish("", b"", protocol=5)  # no topic alias
    with pytest.raises(InvalidTopic, match="65535"):
        codec.encode_publish("x" * 65536, b"")
    with pytest.raises(InvalidTopic, match="65535"):
        codec.encode_publish("é" * 32768, b"")  # 65536 bytes of UTF-8, 32768 characters
    with pytest.raises(InvalidTopic, match="U\\+0000"):
        codec.encode_publish("a\x00b", b"")
    with pytest.raises(InvalidTopic, match="surrogate"):
        codec.encode_publish("a\ud800", b"")
    # InvalidTopic is a ValueError: callers can catch either.
    with pytest.raises(ValueError):
        codec.encode_publish("#", b"")
    # The longest legal topic is fine.
    assert len(codec.encode_publish("x" * 65535, b"")) == 1 + 3 + 2 + 65535


def test_encode_publish_refuses_bad_arguments(codec):
    with pytest.raises(ValueError, match="qos must be 0, 1 or 2"):
        codec.encode_publish("a", b"", qos=3)
    with pytest.raises(ValueError, match="qos must be 0, 1 or 2"):
        codec.encode_publish("a", b"", qos=-1)
    with pytest.raises(ValueError, match="packet_id of 1..65535"):
        codec.encode_publish("a", b"", qos=1, packet_id=0)
    with pytest.raises(ValueError, match="packet_id of 1..65535"):
        codec.encode_publish("a", b"", qos=2, packet_id=65536)
    with pytest.raises(ValueError, match="dup"):
        codec.encode_publish("a", b"", qos=0, dup=True)
    with pytest.raises(ValueError, match="protocol 5"):
        codec.encode_publish("a", b"", properties={"content_type": "x"})
    with pytest.raises(ValueError, match="protocol 5"):
        codec.encode_publish("a", b"", protocol=3, properties={"topic_alias": 1})
    with pytest.raises(ValueError, match="protocol must be 3"):
        codec.encode_publish("a", b"", protocol=6)
    with pytest.raises(TypeError, match="topic must be str"):
        codec.encode_publish(b"a", b"")
    with pytest.raises(TypeError, match="payload must be"):
        codec.encode_publish("a", 42)


def test_encode_publish_refuses_bad_properties(codec):
    with pytest.raises(ValueError, match="unknown MQTT 5 property 'colour'"):
        codec.encode_publish("a", b"", protocol=5, properties={"colour": "red"})
    with pytest.raises(ValueError, match="session_expiry_interval is not allowed in PUBLISH"):
        codec.encode_publish("a", b"", protocol=5, properties={"session_expiry_interval": 1})
    with pytest.raises(ValueError, match="must be 0 or 1"):
        codec.encode_publish("a", b"", protocol=5, properties={"payload_format_indicator": 2})
    with pytest.raises(ValueError, match="must not be 0"):
        codec.encode_publish("a", b"", protocol=5, properties={"topic_alias": 0})
    with pytest.raises(ValueError, match="0..65535"):
        codec.encode_publish("a", b"", protocol=5, properties={"topic_alias": 65536})
    with pytest.raises(ValueError, match="0..4294967295"):
        codec.encode_publish("a", b"", protocol=5, properties={"message_expiry_interval": -1})
    with pytest.raises(ValueError, match="out of range"):
        codec.encode_publish("a", b"", protocol=5,
                             properties={"subscription_identifier": [268_435_456]})
    with pytest.raises(ValueError, match="pairs"):
        codec.encode_publish("a", b"", protocol=5, properties={"user_property": [("only-one",)]})
    with pytest.raises(ValueError, match="U\\+0000"):
        codec.encode_publish("a", b"", protocol=5, properties={"content_type": "a\x00"})
    with pytest.raises(TypeError, match="must be bytes"):
        codec.encode_publish("a", b"", protocol=5, properties={"correlation_data": "text"})
    with pytest.raises(TypeError, match="must be an int"):
        codec.encode_publish("a", b"", protocol=5, properties={"message_expiry_interval": "1"})


def test_encode_ack_refuses_bad_arguments(codec):
    with pytest.raises(ValueError, match="not an acknowledgement"):
        codec.encode_ack(P.PUBLISH, 1)
    with pytest.raises(ValueError, match="not an acknowledgement"):
        codec.encode_ack(P.SUBACK, 1)
    for bad in (0, 65536, -1):
        with pytest.raises(ValueError, match="packet_id must be 1..65535"):
            codec.encode_ack(P.PUBACK, bad)
    with pytest.raises(ValueError, match="MQTT 5"):
        codec.encode_ack(P.PUBACK, 1, 0x10, protocol=4)
    with pytest.raises(ValueError, match="MQTT 5"):
        codec.encode_ack(P.PUBACK, 1, protocol=4, properties={"reason_string": "x"})
    with pytest.raises(ValueError, match="not valid in PUBREL"):
        codec.encode_ack(P.PUBREL, 1, 0x10, protocol=5)
    with pytest.raises(ValueError, match="not allowed in PUBACK"):
        codec.encode_ack(P.PUBACK, 1, protocol=5, properties={"topic_alias": 1})
    with pytest.raises(ValueError, match="protocol must be"):
        codec.encode_ack(P.PUBACK, 1, protocol=2)


def test_encode_refuses_bad_cold_packets(codec):
    m = codec
    cases = [
        (m.Subscribe(1, [m.Subscription("a/#/b", 0)]), 4, InvalidTopic, "'#'"),
        (m.Subscribe(1, [m.Subscription("", 0)]), 4, InvalidTopic, "empty"),
        (m.Subscribe(1, []), 4, ValueError, "at least one topic filter"),
        (m.Subscribe(0, [m.Subscription("a", 0)]), 4, ValueError, "packet_id"),
        (m.Subscribe(1, [m.Subscription("a", 3)]), 4, ValueError, "qos must be"),
        (m.Subscribe(1, [m.Subscription("a", 0, no_local=True)]), 4, ValueError, "MQTT 5"),
        (m.Subscribe(1, [m.Subscription("a", 0, retain_handling=3)]), 5, ValueError,
         "retain_handling"),
        (m.Subscribe(1, [m.Subscription("$share/g/a", 0, no_local=True)]), 5, ValueError,
         "shared subscription"),
        (m.Subscribe(1, [m.Subscription("a", 0)], {"subscription_identifier": [1, 2]}), 5,
         ValueError, "only once"),
        (m.SubAck(1, [3]), 4, ValueError, "not valid in protocol 4"),
        (m.SubAck(1, [0x80]), 3, ValueError, "not valid in protocol 3"),
        (m.SubAck(1, []), 4, ValueError, "at least one"),
        (m.Unsubscribe(1, []), 4, ValueError, "at least one"),
        (m.Unsubscribe(1, ["a+"]), 4, InvalidTopic, "'\\+'"),
        (m.UnsubAck(1, [0]), 4, ValueError, "only in MQTT 5"),
        (m.UnsubAck(1, []), 5, ValueError, "one reason code"),
        (m.Auth(), 4, ValueError, "only in MQTT 5"),
        (m.Disconnect(0x04), 4, ValueError, "only in MQTT 5"),
        (m.Disconnect(0x18), 5, ValueError, "not valid in DISCONNECT"),
        (m.Disconnect(0, {"reason_string": "x"}), 4, ValueError, "protocol 5"),
        (m.ConnAck(False, 6), 4, ValueError, "return code"),
        (m.ConnAck(False, 0x01), 5, ValueError, "not valid in CONNACK"),
        (m.Connect("c", 4, password=b"pw"), 4, ValueError, "password needs a username"),
        (m.Connect("x" * 24, 3), 3, ValueError, "1 to 23"),
        (m.Connect("", 3), 3, ValueError, "1 to 23"),
        (m.Connect("c", 4, keepalive=65536), 4, ValueError, "keepalive"),
        (m.Connect("c", 4, will=m.Will("w/+")), 4, InvalidTopic, "wildcards"),
        (m.Connect("c", 4, will=m.Will("w", qos=3)), 4, ValueError, "will qos"),
        (m.Connect("c", 7), 7, ValueError, "protocol must be"),
        (m.Connect("c", 4, properties={"receive_maximum": 1}), 4, ValueError, "protocol 5"),
        (m.Connect("c", 5, properties={"topic_alias": 1}), 5, ValueError,
         "not allowed in CONNECT"),
        (m.Connect("c", 5, will=m.Will("w", properties={"topic_alias": 1})), 5, ValueError,
         "not allowed in will properties"),
        (m.Connect("c\x00", 4), 4, ValueError, "U\\+0000"),
    ]
    for packet, protocol, exc, match in cases:
        with pytest.raises(exc, match=match):
            m.encode(packet, protocol)


def test_caller_errors_are_value_errors_not_protocol_errors(codec):
    # A mistake by the caller is never reported as the peer's fault.
    for call in (lambda: codec.encode_publish("a/+", b""),
                 lambda: codec.encode_publish("a", b"", qos=3),
                 lambda: codec.encode_ack(P.PUBACK, 0)):
        with pytest.raises(ValueError) as info:
            call()
        assert not isinstance(info.value, MalformedPacket)


def test_payload_too_large_is_a_value_error():
    assert issubclass(PayloadTooLarge, ValueError) and issubclass(PayloadTooLarge, MQTTError)


# --------------------------------------------------------------------------- validate_topic*

@pytest.mark.parametrize("topic", ["a", "a/b", "/", "//", "a/", "$SYS/broker", " ", "é/日本/𝄞",
                                   "x" * 65535])
def test_valid_topics(codec, topic):
    assert codec.validate_topic(topic) is None


@pytest.mark.parametrize("topic, match", [
    ("", "empty"), ("+", "wildcards"), ("a/#", "wildcards"), ("a+b", "wildcards"),
    ("a\x00", "U\\+0000"), ("x" * 65536, "65535"), ("\udc80", "surrogate"),
])
def test_invalid_topics(codec, topic, match):
    with pytest.raises(InvalidTopic, match=match):
        codec.validate_topic(topic)


@pytest.mark.parametrize("topic_filter", ["#", "+", "a/+/b", "a/#", "+/+", "/#", "a//b",
                                          "$share/g/a/+", "$share/g/#", "$SYS/#", "sport/+/player1"])
def test_valid_filters(codec, topic_filter):
    assert codec.validate_topic_filter(topic_filter) is None


@pytest.mark.parametrize("topic_filter, match", [
    ("", "empty"), ("a/#/b", "'#'"), ("a#", "'#'"), ("#/", "'#'"), ("a+", "'\\+'"),
    ("a/+b", "'\\+'"), ("a\x00", "U\\+0000"), ("$share/g", "shared"), ("$share//a", "shared"),
    ("$share/g+/a", "shared"), ("$share/g/", "shared"), ("$share/g/a/#/b", "'#'"),
    ("\ud800", "surrogate"), ("y" * 65536, "65535"),
])
def test_invalid_filters(codec, topic_filter, match):
    with pytest.raises(InvalidTopic, match=match):
        codec.validate_topic_filter(topic_filter)


def test_validators_need_str(codec):
    with pytest.raises(TypeError):
        codec.validate_topic(b"a")
    with pytest.raises(TypeError):
        codec.validate_topic_filter(b"a")
