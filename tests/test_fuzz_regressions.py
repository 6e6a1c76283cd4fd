"""Defects the fuzzers (fuzz/) found, each kept as a test on both twins (or on the session, which
runs on the codec ``mqttfast.codec`` loaded: CI runs it under both). The input that found it is
quoted where it is shorter than the explanation."""
from __future__ import annotations

import re

import pytest

from mqttfast.errors import MalformedPacket

# An MQTT 5 QoS 0 PUBLISH whose property block holds an unknown identifier (0x07), then a good one.
BAD_V5_PUBLISH = b"\x30\x06\x00\x01t\x02\x07\x00"
GOOD_V5_PUBLISH = b"\x30\x05\x00\x01t\x00x"


@pytest.mark.parametrize("pieces", [
    [BAD_V5_PUBLISH + GOOD_V5_PUBLISH],  # the bad packet is parsed in place
    [GOOD_V5_PUBLISH[:3], GOOD_V5_PUBLISH[3:] + BAD_V5_PUBLISH + GOOD_V5_PUBLISH],
    [BAD_V5_PUBLISH[:3], BAD_V5_PUBLISH[3:] + GOOD_V5_PUBLISH],  # ... or completed from a split
], ids=["in-place", "after-a-split-packet", "split"])
def test_a_stream_decoder_keeps_failing_after_a_malformed_packet(codec, pieces):
    """Found by fuzz/codec_target.py (C returned [] where the pure twin raised): after a
    MalformedPacket the C decoder held the bad packet and what followed it, and every later
    ``feed`` returned no packets and dropped its bytes, instead of raising again, as the pure twin
    does (the bad bytes are still there). A caller that kept feeding saw silence, not the error."""
    decoder = codec.StreamDecoder(5)
    *before, last = pieces
    for piece in before:
        assert decoder.feed(piece) == []
    message = "unknown property identifier 0x07 in PUBLISH"
    with pytest.raises(MalformedPacket, match=re.escape(message)):
        decoder.feed(last)
    held = decoder.buffered
    assert held == len(BAD_V5_PUBLISH + GOOD_V5_PUBLISH)
    with pytest.raises(MalformedPacket, match=re.escape(message)):
        decoder.feed(b"")
    with pytest.raises(MalformedPacket, match=re.escape(message)):
        decoder.feed(GOOD_V5_PUBLISH)
    assert decoder.buffered == held + len(GOOD_V5_PUBLISH)  # no byte dropped
