"""The fuzz targets (fuzz/) without atheris: every seed passes them, and each target does catch
what it is there to catch (a twin that disagrees, a session that loses a record), so a fuzz run
that finds nothing means something. The fuzzing itself is ``bash fuzz/run.sh`` (CI: 60 s)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))

import codec_target  # noqa: E402
import seeds  # noqa: E402
import session_target  # noqa: E402

from mqttfast.constants import PacketType as P  # noqa: E402


def test_every_codec_seed_passes():
    inputs = seeds.codec_seeds()
    assert len(inputs) > 300
    for data in inputs:
        codec_target.check(data)


def test_every_session_seed_passes():
    inputs = seeds.session_seeds()
    assert len(inputs) > 50
    for data in inputs:
        session_target.check(data)


class _Skewed:
    """The pure twin, but its decoders report QoS 1 PUBLISH packets one packet id off."""

    def __init__(self, module):
        self._m = module

    def __getattr__(self, name):
        return getattr(self._m, name)

    def decode(self, data, protocol=4):
        return self._skew(self._m.decode(data, protocol))

    def StreamDecoder(self, *args):
        decoder, skew = self._m.StreamDecoder(*args), self._skew

        class Wrapped:
            buffered = property(lambda _: decoder.buffered)

            def feed(self, data):
                return [skew(p) for p in decoder.feed(data)]
        return Wrapped()

    def _skew(self, packet):
        if type(packet).__name__ == "Publish" and packet.qos == 1:
            packet.packet_id += 1
        return packet


def test_the_codec_target_catches_a_disagreement(monkeypatch):
    wire = codec_target.PY.encode(codec_target.PY.Publish("a/b", b"x", 1, 7), 4)
    codec_target.check(codec_target.header(4) + wire)
    monkeypatch.setattr(codec_target, "PY", _Skewed(codec_target.PY))
    with pytest.raises(AssertionError, match="packet_id=7.*packet_id=8"):
        codec_target.check(codec_target.header(4) + wire)


def test_the_codec_target_calls_a_non_protocol_exception_a_crash(monkeypatch):
    def broken(data, protocol=4):
        raise IndexError("index out of range")
    monkeypatch.setattr(codec_target.C, "decode", broken)
    with pytest.raises(IndexError):
        codec_target.check(codec_target.header(4) + b"\xc0\x00")


def test_the_session_target_catches_a_lost_record(monkeypatch):
    from mqttfast.session import Session

    data = session_target.header(4) + codec_target.PY.encode_ack(P.PUBACK, 1, 0, 4)
    session_target.check(data)
    original = Session._complete

    def forgetful(self, record, reason_code, now, refill=True):
        original(self, record, reason_code, now, refill)
        self.completed.remove(record)  # completed, but never reported: lost to the application
    monkeypatch.setattr(Session, "_complete", forgetful)
    with pytest.raises(AssertionError, match="was lost"):
        session_target.check(data)
