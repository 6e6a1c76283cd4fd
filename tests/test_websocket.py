"""mqttfast.websocket, the sans-IO WebSocket layer, with no socket: the upgrade request and the
checks of its answer, masked client frames, the broker's frames fed whole, byte by byte and with
trailing bytes, fragmentation, ping/pong/close, and hostile input that must be a WebSocketError,
never another exception, a hang or memory use."""
from __future__ import annotations

import base64
import os
from typing import List, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqttfast.errors import ProtocolError
from mqttfast.websocket import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    WebSocket,
    WebSocketError,
    accept_for,
    frame,
    websocket_for,
)


def server_frame(payload: bytes, opcode: int = BINARY, fin: bool = True, rsv: int = 0,
                 masked: bool = False) -> bytes:
    """A frame as a server sends it (unmasked unless asked)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, mask_bit | n))
    elif n < 0x10000:
        head = bytes((b0, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, mask_bit | 127)) + n.to_bytes(8, "big")
    return head + (b"\0\0\0\0" if masked else b"") + payload


def unmask(data: bytes) -> Tuple[int, bytes, bytes]:
    """(first byte, payload, rest) of one masked client frame."""
    b0, b1 = data[0], data[1]
    assert b1 & 0x80, "client frames are masked"
    n, pos = b1 & 0x7F, 2
    if n == 126:
        n, pos = int.from_bytes(data[2:4], "big"), 4
    elif n == 127:
        n, pos = int.from_bytes(data[2:10], "big"), 10
    mask = data[pos:pos + 4]
    body = data[pos + 4:pos + 4 + n]
    assert len(body) == n
    return b0, bytes(c ^ mask[i % 4] for i, c in enumerate(body)), data[pos + 4 + n:]


def response(ws: WebSocket, status: str = "101 Switching Protocols", **overrides: str) -> bytes:
    headers = {"Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Accept": accept_for(ws.key).decode(),
               "Sec-WebSocket-Protocol": "mqtt"}
    headers.update({k.replace("_", "-"): v for k, v in overrides.items()})
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers.items() if v != "-"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def opened() -> WebSocket:
    ws = WebSocket("broker:8080", "/mqtt")
    assert ws.receive_handshake(response(ws)) == b""
    return ws


# ---------------------------------------------------------------------------------- upgrade


def test_accept_matches_rfc_6455_example():
    assert accept_for(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_request():
    ws = WebSocket("broker:8080", "/mqtt", {"Authorization": "Bearer t", "X-Id": "7"})
    text = ws.request().decode()
    assert text.startswith("GET /mqtt HTTP/1.1\r\n") and text.endswith("\r\n\r\n")
    lines = text.split("\r\n")
    for line in ("Host: broker:8080", "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: mqtt",
                 "Authorization: Bearer t", "X-Id: 7", f"Sec-WebSocket-Key: {ws.key.decode()}"):
        assert line in lines
    assert len(base64.b64decode(ws.key)) == 16
    assert WebSocket("h").key != ws.key  # a fresh key each time


@pytest.mark.parametrize("path, headers", [
    ("mqtt", None), ("/a b", None), ("/a\r\nX: y", None),
    ("/", {"X": "a\r\nInjected: 1"}), ("/", {"": "x"}), ("/", {"A:B": "x"}),
])
def test_bad_path_or_header_raises(path, headers):
    with pytest.raises(ValueError):
        WebSocket("h", path, headers)
    with pytest.raises(ValueError):
        websocket_for("h", 80, path, headers, False)


def test_host_header():
    assert websocket_for("h", 80, "/", None, False)().host == "h"
    assert websocket_for("h", 443, "/", None, True)().host == "h"
    assert websocket_for("h", 8080, "/", None, False)().host == "h:8080"
    assert websocket_for("::1", 9001, "/", None, False)().host == "[::1]:9001"
    make = websocket_for("h", 80, "/", None, False)
    assert make().key != make().key


def test_handshake_in_pieces_with_trailing_frames():
    ws = WebSocket("h", "/mqtt")
    head = len(response(ws))
    data = response(ws) + server_frame(b"\x20\x02\x00\x00")
    for i in range(head - 1):
        assert ws.receive_handshake(data[i:i + 1]) is None
    rest = ws.receive_handshake(data[head - 1:])
    assert rest is not None and ws.open
    assert ws.receive(rest) == b"\x20\x02\x00\x00"


def test_handshake_header_names_are_case_insensitive():
    ws = WebSocket("h")
    text = response(ws).decode().replace("Upgrade: websocket", "upgrade: WebSocket")
    text = text.replace("Connection: Upgrade", "CONNECTION: keep-alive, upgrade")
    assert ws.receive_handshake(text.encode()) == b""


@pytest.mark.parametrize("status, overrides, message", [
    ("403 Forbidden", {}, "refused the WebSocket upgrade: 'HTTP/1.1 403 Forbidden'"),
    ("200 OK", {}, "refused"),
    ("101 Switching Protocols", {"Upgrade": "-"}, "Upgrade: websocket"),
    ("101 Switching Protocols", {"Connection": "close"}, "Connection: Upgrade"),
    ("101 Switching Protocols", {"Sec_WebSocket_Accept": "AAAA"}, "Accept is wrong"),
    ("101 Switching Protocols", {"Sec_WebSocket_Protocol": "-"}, "subprotocol"),
    ("101 Switching Protocols", {"Sec_WebSocket_Protocol": "mqttv3.1"}, "subprotocol"),
    ("101 Switching Protocols", {"Sec_WebSocket_Extensions": "permessage-deflate"},
     "extensions"),
])
def test_bad_upgrade_responses(status, overrides, message):
    ws = WebSocket("h")
    with pytest.raises(WebSocketError, match=message):
        ws.receive_handshake(response(ws, status, **overrides))
    assert not ws.open


@pytest.mark.parametrize("data", [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 101 OK\r\nbad line\r\n\r\n"])
def test_garbage_responses(data):
    with pytest.raises(WebSocketError):
        WebSocket("h").receive_handshake(data)


def test_endless_response_head_is_refused():
    ws = WebSocket("h")
    with pytest.raises(WebSocketError, match="too long"):
        for _ in range(100):
            ws.receive_handshake(b"X-Padding: " + b"a" * 1000 + b"\r\n")


def test_websocket_error_is_a_protocol_error():
    assert issubclass(WebSocketError, ProtocolError)  # the loop closes the connection for it


# ---------------------------------------------------------------------------- client frames


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 125, 126, 127, 65535, 65536, 300_000])
def test_client_frames_are_masked_and_round_trip(n):
    payload = os.urandom(n)
    data = frame(payload)
    b0, body, rest = unmask(data)
    assert b0 == 0x80 | BINARY and body == payload and rest == b""
    if n >= 8:
        assert payload not in data  # masked


def test_masks_differ():
    assert frame(b"same payload")[2:6] != frame(b"same payload")[2:6]


def test_close_frame():
    b0, body, _ = unmask(WebSocket("h").close_frame(1000))
    assert b0 == 0x80 | CLOSE and body == b"\x03\xe8"


# ---------------------------------------------------------------------------- server frames


def feed_all_ways(data: bytes) -> List[bytes]:
    """What ``receive`` returns for ``data`` fed whole, byte by byte, and in two halves."""
    results = []
    ws = opened()
    results.append(ws.receive(data))
    ws = opened()
    results.append(b"".join(ws.receive(data[i:i + 1]) for i in range(len(data))))
    ws = opened()
    half = len(data) // 2
    results.append(ws.receive(data[:half]) + ws.receive(data[half:]))
    return results


@pytest.mark.parametrize("sizes", [[0], [1], [125], [126], [65535], [65536], [3, 200, 70000]])
def test_data_frames(sizes):
    payloads = [os.urandom(n) for n in sizes]
    data = b"".join(server_frame(p) for p in payloads)
    assert feed_all_ways(data) == [b"".join(payloads)] * 3


def test_fragmented_message_with_a_ping_inside():
    data = (server_frame(b"ab", BINARY, fin=False) + server_frame(b"cd", CONTINUATION, fin=False)
            + server_frame(b"hello", PING) + server_frame(b"ef", CONTINUATION)
            + server_frame(b"gh"))
    assert feed_all_ways(data) == [b"abcdefgh"] * 3
    ws = opened()
    ws.receive(data)
    b0, body, rest = unmask(bytes(ws.control))
    assert b0 == 0x80 | PONG and body == b"hello" and rest == b""


def test_pong_and_empty_ping():
    ws = opened()
    assert ws.receive(server_frame(b"x", PONG) + server_frame(b"", PING) + server_frame(b"d")) \
        == b"d"
    b0, body, _ = unmask(bytes(ws.control))
    assert b0 == 0x80 | PONG and body == b""


def test_close_is_reported_and_answered():
    ws = opened()
    data = server_frame(b"ab") + server_frame(b"\x03\xe9going away", CLOSE) + server_frame(b"zz")
    assert ws.receive(data) == b"ab"  # nothing after the close counts
    assert ws.close_code == 1001 and ws.close_reason == "going away"
    b0, body, _ = unmask(bytes(ws.control))
    assert b0 == 0x80 | CLOSE and body == b"\x03\xe9"
    assert ws.receive(server_frame(b"more")) == b""


def test_close_without_a_code():
    ws = opened()
    ws.receive(server_frame(b"", CLOSE))
    assert ws.close_code == 1005


@pytest.mark.parametrize("data, message", [
    (server_frame(b"x", masked=True), "masked"),
    (server_frame(b"x", rsv=0x40), "reserved"),
    (server_frame(b"x", rsv=0x10), "reserved"),
    (server_frame(b"text", TEXT), "text"),
    (server_frame(b"x", 0x3), "unknown WebSocket opcode"),
    (server_frame(b"x", 0xB), "control opcode"),
    (server_frame(b"x" * 126, PING), "oversized"),
    (server_frame(b"x", PING, fin=False), "fragmented"),
    (server_frame(b"x", CONTINUATION), "no message to continue"),
    (server_frame(b"a", BINARY, fin=False) + server_frame(b"b"), "inside a fragmented"),
    (server_frame(b"\x03", CLOSE), "1-byte"),
    (bytes((0x82, 127)) + (1 << 63).to_bytes(8, "big"), "top bit"),
])
def test_hostile_frames(data, message):
    ws = opened()
    with pytest.raises(WebSocketError, match=message):
        ws.receive(data)


def test_a_huge_announced_frame_costs_nothing():
    ws = opened()
    assert ws.receive(bytes((0x82, 127)) + (1 << 62).to_bytes(8, "big") + b"abc") == b"abc"
    assert ws.receive(b"def") == b"def"  # still the same frame, streamed
    assert len(ws._buf) == 0


@given(st.binary(max_size=300))
def test_random_bytes_are_data_or_a_websocket_error(data):
    ws = opened()
    try:
        out = ws.receive(data)
    except WebSocketError:
        return
    assert len(out) <= len(data)


@given(st.lists(st.binary(max_size=200), max_size=8), st.integers(1, 50))
def test_any_chunking_gives_the_same_stream(payloads, step):
    data = b"".join(server_frame(p) for p in payloads)
    ws = opened()
    out = b"".join(ws.receive(data[i:i + step]) for i in range(0, len(data), step))
    assert out == b"".join(payloads)
