"""Differential fuzz target over the two codec twins: the Cython ``_codec`` and the pure ``_codec_py``.

An input is two control bytes and a byte stream:

- byte 0: the protocol level (``PROTOCOLS[b % 3]``: 3, 4 or 5);
- byte 1: how to cut the stream (low 4 bits: chunk size, 0 for whole) and, with bit 7 set, a
  maximum packet size of ``2 + (b & 0x70)`` for the stream decoders;
- the rest: bytes "from the network".

Each twin's ``StreamDecoder`` is fed the same chunks; after every ``feed`` both must return equal
packets (field-wise ``==`` and the same ``repr``) or raise the same exception type with the same
message, and hold back the same number of bytes. Every exception must be a ``MalformedPacket``
(the codec's one error for bad input); anything else is a crash. The stream is also given whole
to each twin's one-packet ``decode`` under every protocol level, with the same checks. Chunked and
whole feeding must agree with each other as well.

``check(data)`` raises ``AssertionError`` (or the crash itself) on a finding; it needs no atheris,
so the seeds and regressions replay under pytest too (tests/test_fuzz_targets.py).
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, List, Optional, Tuple

from mqttfast.errors import MalformedPacket

PROTOCOLS = (3, 4, 5)


def twins() -> Tuple[ModuleType, ModuleType]:
    """``(c, py)``; the C twin must load: a differential run against itself finds nothing."""
    return importlib.import_module("mqttfast._codec"), importlib.import_module("mqttfast._codec_py")


C, PY = twins()


def header(protocol: int, chunk: int = 0, max_packet_size: Optional[int] = None) -> bytes:
    """The two control bytes that select ``protocol``, ``chunk`` and ``max_packet_size``."""
    if max_packet_size is None:
        second = chunk & 0x0F
    else:
        assert max_packet_size - 2 in range(0, 0x71, 0x10), max_packet_size
        second = 0x80 | (max_packet_size - 2) | (chunk & 0x0F)
    return bytes((PROTOCOLS.index(protocol), second))


def parse(data: bytes) -> Tuple[int, int, Optional[int], bytes]:
    """``(protocol, chunk, max_packet_size, stream)`` of one fuzz input."""
    if len(data) < 2:
        return 4, 0, None, data
    second = data[1]
    limit = 2 + (second & 0x70) if second & 0x80 else None
    return PROTOCOLS[data[0] % 3], second & 0x0F, limit, data[2:]


def outcome(fn: Any, *args: Any) -> Tuple[str, Any]:
    """``("ok", result)`` or ``("error", (type name, message))``; an exception that is not a
    ``MalformedPacket`` propagates: it is a crash whatever the other twin does."""
    try:
        return "ok", fn(*args)
    except MalformedPacket as exc:
        return "error", (type(exc).__name__, str(exc))


def same(what: str, a: Tuple[str, Any], b: Tuple[str, Any]) -> None:
    """Two outcomes agree: same packets (by fields and by repr) or the same error."""
    assert a[0] == b[0], f"{what}: C {a!r} but pure {b!r}"
    if a[0] == "ok":
        packets_a, packets_b = a[1], b[1]
        if not isinstance(packets_a, list):
            packets_a, packets_b = [packets_a], [packets_b]
        assert len(packets_a) == len(packets_b), f"{what}: C {packets_a!r} but pure {packets_b!r}"
        for x, y in zip(packets_a, packets_b, strict=True):
            assert type(x).__name__ == type(y).__name__ and x == y and y == x, \
                f"{what}: C {x!r} but pure {y!r}"
            assert repr(x) == repr(y), f"{what}: C repr {x!r} but pure {y!r}"
    else:
        assert a[1] == b[1], f"{what}: C raised {a[1]!r} but pure {b[1]!r}"


def chunks(stream: bytes, size: int) -> List[bytes]:
    if not size:
        return [stream]
    return [stream[i:i + size] for i in range(0, len(stream), size)] or [b""]


def check(data: bytes) -> None:
    protocol, chunk, limit, stream = parse(data)
    pieces = chunks(stream, chunk)
    decoders = C.StreamDecoder(protocol, limit), PY.StreamDecoder(protocol, limit)
    packets: List[Any] = []
    failed = False
    for i, piece in enumerate(pieces):
        got = [outcome(d.feed, piece) for d in decoders]
        same(f"feed #{i} (protocol {protocol}, chunk {chunk}, limit {limit})", *got)
        buffered = [d.buffered for d in decoders]
        assert buffered[0] == buffered[1], f"feed #{i}: C holds {buffered[0]} bytes, pure {buffered[1]}"
        if got[1][0] == "error":
            again = [outcome(d.feed, b"") for d in decoders]
            same(f"feed after the error of feed #{i}", *again)
            assert again[1][0] == "error", f"after an error the pure twin went on: {again[1]!r}"
            failed = True
            break
        packets += got[1][1]
    if not failed and chunk:
        # Any chunking gives what one whole feed gives.
        whole = outcome(PY.StreamDecoder(protocol, limit).feed, stream)
        assert whole[0] == "ok", f"whole stream raised {whole[1]!r}, in chunks of {chunk} it did not"
        same(f"chunks of {chunk} against the whole stream", ("ok", packets), ("ok", whole[1]))
    for level in PROTOCOLS:
        same(f"decode(protocol={level})", outcome(C.decode, stream, level),
             outcome(PY.decode, stream, level))
