"""The codec benchmark's cases, shared by ``codec_table.py`` (timeit) and ``bench_codec.py``
(pytest-benchmark).

A case is one cell of the table: an operation, a protocol, a contender (mqttfast's C twin, its pure
twin, the Rust-backed ``mqtt5`` package, paho-mqtt) and the statement that does the work once. Every
contender gets the same calling pattern:

- encode: one call producing ``bytes`` from (topic, payload, qos);
- decode one: one call on a ``bytes`` object holding one PUBLISH, returning a Python object;
- decode 64 KiB: one chunk of whole PUBLISH packets in, one Python object per packet out (timed per
  packet): ``StreamDecoder.feed`` for mqttfast, a ``read`` loop over a ``memoryview`` for mqtt5
  (it has no stream decoder), ``Client._packet_read`` over an in-memory socket for paho;
- remaining length: one call parsing the fixed header's varint.

paho-mqtt has no decoder that takes bytes: its client reads a packet with ``recv(1)`` for the first
byte, ``recv(1)`` per remaining-length byte, one ``recv`` for the rest, then builds an
``MQTTMessage`` and calls ``on_message``. We drive that real path (``Client._packet_read``) with a
socket whose ``recv`` is ``io.BytesIO.read``, so paho pays no system call here (it would on a real
socket), and ``on_message`` is a minimal Python callback that counts messages.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

TOPIC = "sensors/temp/001"  # 16 bytes
PAYLOAD = bytes(range(64))
CHUNK = 64 * 1024
PROTOCOLS = (5, 4)
PROTOCOL_NAMES = {4: "MQTT 3.1.1", 5: "MQTT 5"}


@dataclass
class Contender:
    name: str  # "c", "python", "mqtt5", "paho"
    title: str
    module: Any = None  # the codec module, mqtt5, or paho.mqtt.client
    version: str = ""
    missing: str = ""  # why it cannot run here ("" if it can)


@dataclass
class Case:
    op: str  # "encode", "decode_one", "decode_chunk", "decode_chunk_topics", "remaining_length_1", ...
    protocol: Optional[int]
    contender: str
    stmt: str  # the work, once: an expression, or statements that leave the result in ``out``
    names: Dict[str, Any]  # what ``stmt`` refers to
    per_call: int = 1  # packets handled by one execution of ``stmt``
    check: Optional[Callable[[Any], None]] = None  # validates the result of one execution
    reset: Optional[Callable[[], None]] = None  # run before the check (paho's message counter)
    unit: str = "packet"
    id: str = field(default="")

    def function(self) -> Callable[[], Any]:
        """``stmt`` as a zero-argument function returning its result (for pytest-benchmark)."""
        if "\n" in self.stmt or self.stmt.startswith("out ="):
            body = self.stmt
        else:
            body = f"out = {self.stmt}"
        src = "def _run():\n" + "".join(f"    {line}\n" for line in body.splitlines())
        src += "    return out\n"
        scope = dict(self.names)
        exec(compile(src, f"<case {self.id}>", "exec"), scope)
        return scope["_run"]

    def run_check(self) -> None:
        if self.reset is not None:
            self.reset()
        result = self.function()()
        if self.check is not None:
            self.check(result)


# --------------------------------------------------------------------------- contenders

def load_contenders() -> Dict[str, Contender]:
    out: Dict[str, Contender] = {}
    try:
        from mqttfast import _codec  # type: ignore[attr-defined]

        out["c"] = Contender("c", "C twin", _codec, _mqttfast_version())
    except ImportError as exc:
        out["c"] = Contender("c", "C twin", missing=f"not built ({exc})")
    from mqttfast import _codec_py

    out["python"] = Contender("python", "pure twin", _codec_py, _mqttfast_version())
    try:
        import mqtt5

        out["mqtt5"] = Contender("mqtt5", "mqtt5", mqtt5, _dist_version("mqtt5"))
    except ImportError:
        out["mqtt5"] = Contender("mqtt5", "mqtt5", missing="not installed (pip install mqtt5)")
    try:
        import paho.mqtt.client as paho

        out["paho"] = Contender("paho", "paho", paho, _dist_version("paho-mqtt"))
    except ImportError:
        out["paho"] = Contender("paho", "paho", missing="not installed (pip install paho-mqtt)")
    return out


def _mqttfast_version() -> str:
    from mqttfast import __version__

    return __version__


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def is_stale(module: Any) -> bool:
    """True when the built extension is older than its ``.pyx``/``.pxd`` (rebuild it)."""
    built = getattr(module, "__file__", None)
    if not built:
        return False
    here = os.path.dirname(built)
    sources = [os.path.join(here, n) for n in ("_codec.pyx", "_codec.pxd")]
    newest = max((os.path.getmtime(s) for s in sources if os.path.exists(s)), default=0.0)
    return newest > os.path.getmtime(built)


# --------------------------------------------------------------------------- data

def publish_bytes(topic: str, payload: bytes, protocol: int) -> bytes:
    """A QoS 0 PUBLISH, built by hand so the cases do not depend on the code under test."""
    raw = topic.encode()
    props = b"\x00" if protocol == 5 else b""
    body = len(raw).to_bytes(2, "big") + raw + props + payload
    assert len(body) < 128
    return bytes((0x30, len(body))) + body


def chunk_of(protocol: int, distinct_topics: bool) -> List[bytes]:
    """As many whole PUBLISH packets as fit in 64 KiB (all 16-byte topics)."""
    size = len(publish_bytes(TOPIC, PAYLOAD, protocol))
    count = CHUNK // size
    if distinct_topics:
        return [publish_bytes(f"sensors/temp/{i:03d}", PAYLOAD, protocol) for i in range(count)]
    return [publish_bytes(TOPIC, PAYLOAD, protocol)] * count


def _topic_of(packet: Any) -> str:
    return packet.topic if isinstance(packet.topic, str) else packet.topic.decode()


def _check_publish(topic: str) -> Callable[[Any], None]:
    def check(packet: Any) -> None:
        assert _topic_of(packet) == topic, packet
        assert bytes(packet.payload) == PAYLOAD, packet

    return check


def _check_list(packets: List[bytes]) -> Callable[[Any], None]:
    topics = [p[4:20].decode() for p in packets]

    def check(result: Any) -> None:
        assert len(result) == len(packets), (len(result), len(packets))
        assert [_topic_of(p) for p in result] == topics
        assert all(bytes(p.payload) == PAYLOAD for p in result)

    return check


class _PahoReader:
    """paho's real receive path over an in-memory socket; ``on_message`` counts messages."""

    class _Socket(io.BytesIO):
        recv = io.BytesIO.read

    def __init__(self, paho: Any, protocol: int, data: bytes) -> None:
        version = paho.MQTTv5 if protocol == 5 else paho.MQTTv311
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=version)
        self.socket = self._Socket(data)
        self.client._sock = self.socket
        self.count = 0
        self.last: Any = None
        self.client.on_message = self.on_message

    def on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.count += 1
        self.last = message

    def reset(self) -> None:
        self.count = 0
        self.last = None


# --------------------------------------------------------------------------- cases

OPERATIONS = [
    # (op, protocol, label, unit)
    ("encode", 5, "encode PUBLISH", "packet"),
    ("encode", 4, "encode PUBLISH", "packet"),
    ("decode_one", 5, "decode one PUBLISH", "packet"),
    ("decode_one", 4, "decode one PUBLISH", "packet"),
    ("decode_chunk", 5, "decode 64 KiB chunk, one topic", "packet"),
    ("decode_chunk", 4, "decode 64 KiB chunk, one topic", "packet"),
    ("decode_chunk_topics", 5, "decode 64 KiB chunk, new topic each", "packet"),
    ("decode_chunk_topics", 4, "decode 64 KiB chunk, new topic each", "packet"),
    ("remaining_length_1", None, "remaining length, 1 byte", "call"),
    ("remaining_length_4", None, "remaining length, 4 bytes", "call"),
]

# Why a cell is empty when the contender is installed.
NOT_APPLICABLE = {
    ("encode", "paho"): "no encoder callable on its own: publish() queues onto its socket",
    ("remaining_length_1", "mqtt5"): "no remaining-length parser exposed",
    ("remaining_length_4", "mqtt5"): "no remaining-length parser exposed",
    ("remaining_length_1", "paho"): "parsed inline in _packet_read, one recv(1) per byte",
    ("remaining_length_4", "paho"): "parsed inline in _packet_read, one recv(1) per byte",
}


def make_case(op: str, protocol: Optional[int], who: Contender) -> "Case | str":
    """The case for one cell, or a string saying why there is none."""
    if who.missing:
        return who.missing
    if (op, who.name) in NOT_APPLICABLE:
        return NOT_APPLICABLE[(op, who.name)]
    if who.name == "mqtt5" and protocol not in (5, None):
        return "speaks MQTT 5 only (the 3.1.1 rows)"
    case_id = f"{op}-{'v%d' % protocol if protocol else 'any'}-{who.name}"
    m = who.module
    one = publish_bytes(TOPIC, PAYLOAD, protocol or 4)

    if who.name in ("c", "python"):
        if op == "encode":
            stmt = ("encode_publish(topic, payload, qos, protocol=5)" if protocol == 5
                    else "encode_publish(topic, payload, qos)")
            return Case(op, protocol, who.name, stmt,
                        {"encode_publish": m.encode_publish, "topic": TOPIC, "payload": PAYLOAD,
                         "qos": 0},
                        check=_equals(one), id=case_id)
        if op == "decode_one":
            return Case(op, protocol, who.name, f"decode(data, {protocol})",
                        {"decode": m.decode, "data": one}, check=_check_publish(TOPIC), id=case_id)
        if op in ("decode_chunk", "decode_chunk_topics"):
            packets = chunk_of(protocol, op == "decode_chunk_topics")  # type: ignore[arg-type]
            decoder = m.StreamDecoder(protocol)
            return Case(op, protocol, who.name, "feed(chunk)",
                        {"feed": decoder.feed, "chunk": b"".join(packets)},
                        per_call=len(packets), check=_check_list(packets), id=case_id)
        if op == "remaining_length_1":
            return Case(op, protocol, who.name, "decode_remaining_length(data, 1)",
                        {"decode_remaining_length": m.decode_remaining_length, "data": one},
                        check=_equals((len(one) - 2, 2)), unit="call", id=case_id)
        if op == "remaining_length_4":
            return Case(op, protocol, who.name, "decode_remaining_length(data)",
                        {"decode_remaining_length": m.decode_remaining_length,
                         "data": b"\xff\xff\xff\x7f"},
                        check=_equals((268_435_455, 4)), unit="call", id=case_id)

    if who.name == "mqtt5":
        if op == "encode":
            return Case(op, protocol, who.name,
                        "PublishPacket(topic=topic, payload=payload, qos=qos).write()",
                        {"PublishPacket": m.PublishPacket, "topic": TOPIC, "payload": PAYLOAD,
                         "qos": m.QoS.AT_MOST_ONCE},
                        check=_equals(one), id=case_id)
        if op == "decode_one":
            return Case(op, protocol, who.name, "read(data)", {"read": m.read, "data": one},
                        check=lambda r: _check_publish(TOPIC)(r[0]), id=case_id)
        if op in ("decode_chunk", "decode_chunk_topics"):
            packets = chunk_of(protocol, op == "decode_chunk_topics")  # type: ignore[arg-type]
            chunk = b"".join(packets)
            stmt = ("out = []\n"
                    "pos = 0\n"
                    "while pos < size:\n"
                    "    packet, used = read(view[pos:])\n"
                    "    out.append(packet)\n"
                    "    pos += used")
            return Case(op, protocol, who.name, stmt,
                        {"read": m.read, "view": memoryview(chunk), "size": len(chunk)},
                        per_call=len(packets), check=_check_list(packets), id=case_id)

    if who.name == "paho":
        if op == "decode_one":
            reader = _PahoReader(m, protocol, one)  # type: ignore[arg-type]
            return Case(op, protocol, who.name, "rewind(0)\nout = read_packet()",
                        {"rewind": reader.socket.seek, "read_packet": reader.client._packet_read},
                        check=_paho_check(reader, [one]), reset=reader.reset, id=case_id)
        if op in ("decode_chunk", "decode_chunk_topics"):
            packets = chunk_of(protocol, op == "decode_chunk_topics")  # type: ignore[arg-type]
            reader = _PahoReader(m, protocol, b"".join(packets))  # type: ignore[arg-type]
            stmt = "rewind(0)\nfor _ in packets:\n    out = read_packet()"
            return Case(op, protocol, who.name, stmt,
                        {"rewind": reader.socket.seek, "read_packet": reader.client._packet_read,
                         "packets": range(len(packets))},
                        per_call=len(packets), check=_paho_check(reader, packets),
                        reset=reader.reset, id=case_id)
    return "not measured"


def paho_body_case(protocol: int, who: Contender) -> "Case | str":
    """paho's private ``_packet.decode_publish``: the PUBLISH body after the fixed header is read.

    Not a full decoder (it is handed the first byte and the body separately, and builds no
    ``MQTTMessage``); shown as a footnote to say how much of paho's time is the decoding itself.
    """
    if who.missing:
        return who.missing
    from paho.mqtt import _packet

    one = publish_bytes(TOPIC, PAYLOAD, protocol)
    version = who.module.MQTTv5 if protocol == 5 else who.module.MQTTv311
    return Case("paho_body", protocol, "paho", "decode_publish(first, body, version)",
                {"decode_publish": _packet.decode_publish, "first": one[0],
                 "body": bytearray(one[2:]), "version": version},
                check=_check_publish(TOPIC), id=f"paho_body-v{protocol}")


def _equals(expected: Any) -> Callable[[Any], None]:
    def check(result: Any) -> None:
        assert result == expected, (result, expected)

    return check


def _paho_check(reader: _PahoReader, packets: List[bytes]) -> Callable[[Any], None]:
    def check(rc: Any) -> None:
        assert rc == 0, f"paho _packet_read returned {rc!r}"
        assert reader.count == len(packets), (reader.count, len(packets))
        assert reader.socket.tell() == sum(map(len, packets))
        _check_publish(packets[-1][4:20].decode())(reader.last)

    return check
