"""Seed inputs for the fuzz targets, made from the test suite's own packets.

``python fuzz/seeds.py DIR`` writes ``DIR/codec/`` and ``DIR/session/`` (one file per seed, named
by its content's hash, so writing twice changes nothing). The codec seeds are every encoding of
tests/packet_cases.py (whole, and cut in chunks, with and without a packet size limit), the
malformed frames of tests/test_malformed.py, and each protocol's packets in one stream; the
session seeds are the broker's side of the flows the session target sets up (acks for its packet
ids, SUBACK, incoming QoS 0/1/2 publishes, PUBREL, PINGRESP, DISCONNECT, aliases).
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import codec_target  # noqa: E402
import session_target  # noqa: E402
from packet_cases import ALL_CASES  # noqa: E402
from test_malformed import MALFORMED  # noqa: E402

from mqttfast import _codec_py as py  # noqa: E402
from mqttfast.constants import PacketType as P  # noqa: E402


def codec_seeds() -> List[bytes]:
    out = []
    streams: Dict[int, bytes] = {3: b"", 4: b"", 5: b""}
    for _, protocol, build in ALL_CASES:
        wire = py.encode(build(py), protocol)
        streams[protocol] += wire
        out.append(codec_target.header(protocol) + wire)
        out.append(codec_target.header(protocol, chunk=3) + wire)
    for _, protocol, wire, _ in MALFORMED:
        out.append(codec_target.header(protocol) + wire)
        out.append(codec_target.header(protocol, chunk=1) + wire)
    for protocol, stream in streams.items():
        out.append(codec_target.header(protocol) + stream)
        out.append(codec_target.header(protocol, chunk=7, max_packet_size=66) + stream)
    return out


def session_seeds() -> List[bytes]:
    def ack(kind: int, pid: int, protocol: int, code: int = 0) -> bytes:
        return py.encode_ack(kind, pid, code, protocol)

    out = []
    for protocol in (3, 4, 5):
        # The target publishes QoS 1 (id 1), QoS 2 (id 2), QoS 1 (id 3), QoS 2 (id 4, or queued)
        # and subscribes (the next id).
        flows = [
            ack(P.PUBACK, 1, protocol) + ack(P.PUBREC, 2, protocol) + ack(P.PUBCOMP, 2, protocol),
            ack(P.PUBACK, 3, protocol) + ack(P.PUBACK, 1, protocol) + ack(P.PUBACK, 1, protocol),
            ack(P.PUBREC, 2, protocol) + ack(P.PUBREC, 4, protocol) + ack(P.PUBCOMP, 4, protocol)
            + ack(P.PUBCOMP, 2, protocol) + ack(P.PUBCOMP, 2, protocol),
            py.encode(py.SubAck(5, [1, 2]), protocol) + py.encode(py.SubAck(4, [1, 2]), protocol),
            py.encode(py.Publish("s/x", b"0"), protocol)
            + py.encode(py.Publish("s/x", b"1", 1, 9), protocol)
            + py.encode(py.Publish("s/x", b"2", 2, 9), protocol) + ack(P.PUBREL, 9, protocol)
            + py.encode(py.Publish("s/x", b"2", 2, 9, dup=True), protocol),
            b"\xd0\x00" + py.encode(py.Disconnect(), protocol) + ack(P.PUBACK, 1, protocol),
        ]
        if protocol == 5:
            flows += [
                py.encode(py.Publish("s/a", b"x", 1, 7, properties={"topic_alias": 1}), 5)
                + py.encode(py.Publish("", b"y", 0, properties={"topic_alias": 1}), 5),
                ack(P.PUBACK, 1, 5, 0x97) + ack(P.PUBREC, 2, 5, 0x80) + ack(P.PUBACK, 3, 5),
                py.encode(py.Auth(0x18, {"authentication_method": "x"}), 5),
            ]
        for flow in flows:
            for flags in ({}, {"chunk": 2}, {"session_present": True, "manual_ack": True},
                          {"ack_timeout": True, "chunk": 5}, {"clean_session": True}):
                out.append(session_target.header(protocol, **flags) + flow)
    return out


def write(directory: Path) -> Dict[str, int]:
    counts = {}
    for name, seeds in (("codec", codec_seeds()), ("session", session_seeds())):
        target = directory / name
        target.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            (target / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        counts[name] = len(seeds)
    return counts


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python fuzz/seeds.py DIR")
    for name, count in write(Path(sys.argv[1])).items():
        print(f"{count} {name} seeds in {sys.argv[1]}/{name}")
