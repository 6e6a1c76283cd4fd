"""A sans-IO WebSocket client transport for MQTT (RFC 6455, subprotocol ``mqtt``).

No sockets: ``WebSocket`` makes the HTTP upgrade request, checks the broker's answer (status 101,
``Upgrade``, ``Connection``, ``Sec-WebSocket-Accept``, ``Sec-WebSocket-Protocol: mqtt``), masks the
client's frames (``frame``) and turns the broker's frames back into the MQTT byte stream
(``receive``). MQTT over WebSocket is a byte stream in binary frames, so a data frame's payload
is handed on as it arrives, however it is fragmented, and nothing waits for a whole frame: a frame
that announces 2**63 bytes costs no memory. Pings are answered, a close is answered and reported;
anything else a broker may not send is a ``WebSocketError``, never a crash.
"""
from __future__ import annotations

import base64
import hashlib
import os
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

from .errors import ProtocolError

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_RESPONSE = 16 * 1024  # the upgrade response's head; a broker's is a few hundred bytes
Bytes = Union[bytes, bytearray, memoryview]
BINARY, CLOSE, PING, PONG, CONTINUATION, TEXT = 0x2, 0x8, 0x9, 0xA, 0x0, 0x1


class WebSocketError(ProtocolError):
    """The broker broke the WebSocket protocol (or refused the upgrade)."""


def accept_for(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``Sec-WebSocket-Key: key``."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def frame(payload: Bytes, opcode: int = BINARY) -> bytes:
    """One final, masked client frame. The XOR runs on two big integers: C speed, no loop here."""
    n = len(payload)
    mask = os.urandom(4)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 0x10000:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    if not n:
        return head + mask
    key = (mask * ((n + 3) >> 2))[:n]  # big-endian: no byte reversal, a quarter faster here
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + body


class WebSocket:
    """One client WebSocket connection's state: upgrade, then frames both ways."""

    def __init__(self, host: str, path: str = "/", headers: Optional[Mapping[str, str]] = None,
                 subprotocol: str = "mqtt") -> None:
        for name, value in (headers or {}).items():
            if any(c in f"{name}{value}" for c in "\r\n\0") or not name or ":" in name:
                raise ValueError(f"invalid WebSocket header {name!r}")
        if not path.startswith("/") or any(c in path for c in " \r\n\0"):
            raise ValueError(f"invalid WebSocket path {path!r}")
        self.host = host
        self.path = path
        self.headers = dict(headers or {})
        self.subprotocol = subprotocol
        self.key = base64.b64encode(os.urandom(16))
        self.open = False  # the upgrade was accepted
        self.close_code: Optional[int] = None  # set once the broker sent a close frame
        self.close_reason = ""
        self.control = bytearray()  # control frames to send (pongs, the close reply)
        self._head = bytearray()  # the upgrade response, until its end
        self._buf = bytearray()  # bytes of a frame header not complete yet
        self._remaining = 0  # payload bytes left in the current frame
        self._opcode = 0  # of the current frame
        self._in_message = False  # a fragmented data message is going on
        self._ctl = bytearray()  # the current control frame's payload

    # ------------------------------------------------------------------ the upgrade

    def request(self) -> bytes:
        """The HTTP/1.1 upgrade request."""
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {self.key.decode()}",
                 "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Protocol: {self.subprotocol}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def receive_handshake(self, data: Bytes) -> Optional[bytes]:
        """Feed the upgrade response; None while incomplete, then the bytes after it (already
        WebSocket frames). ``WebSocketError`` when the broker refused or answered wrong."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_RESPONSE:
                raise WebSocketError("the WebSocket upgrade response is too long")
            return None
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4:])
        self._head = bytearray()
        status, headers = _parse_head(head)
        if status[1:2] != ["101"]:
            raise WebSocketError(f"the broker refused the WebSocket upgrade: {' '.join(status)!r}")
        if headers.get("upgrade", "").lower() != "websocket":
            raise WebSocketError("the upgrade response has no 'Upgrade: websocket'")
        if "upgrade" not in [t.strip().lower() for t in headers.get("connection", "").split(",")]:
            raise WebSocketError("the upgrade response has no 'Connection: Upgrade'")
        if headers.get("sec-websocket-accept", "").encode() != accept_for(self.key):
            raise WebSocketError("the upgrade response's Sec-WebSocket-Accept is wrong")
        if headers.get("sec-websocket-protocol", "") != self.subprotocol:
            raise WebSocketError(f"the broker did not accept the {self.subprotocol!r} "
                                 "WebSocket subprotocol")
        if headers.get("sec-websocket-extensions"):
            raise WebSocketError("the broker chose WebSocket extensions that were not offered")
        self.open = True
        return rest

    # ------------------------------------------------------------------ frames

    def receive(self, data: Bytes) -> bytes:
        """Feed bytes from the broker; return the MQTT bytes their data frames carried. Control
        replies are queued in ``control``; a close sets ``close_code``."""
        if self.close_code is not None:
            return b""  # after a close, nothing more is data (RFC 6455 5.5.1)
        buf = self._buf
        buf += data
        out = bytearray()
        pos = 0
        end = len(buf)
        while pos < end:
            if self._remaining:
                take = min(self._remaining, end - pos)
                if self._opcode >= CLOSE:
                    self._ctl += buf[pos:pos + take]
                else:
                    out += buf[pos:pos + take]
                pos += take
                self._remaining -= take
                if self._remaining:
                    break
                if self._opcode >= CLOSE:
                    self._on_control()
                    if self.close_code is not None:
                        break
                continue
            if end - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:
                raise WebSocketError("the broker sent a masked frame")
            length = b1 & 0x7F
            head = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            if end - pos < head:
                break
            if length == 126:
                length = int.from_bytes(buf[pos + 2:pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                if length >> 63:
                    raise WebSocketError("a WebSocket frame length with the top bit set")
            self._start_frame(b0, length)
            pos += head
            self._remaining = length
            if not length and self._opcode >= CLOSE:
                self._on_control()
                if self.close_code is not None:
                    break
        del buf[:pos]
        return bytes(out)

    def _start_frame(self, b0: int, length: int) -> None:
        fin, opcode = b0 & 0x80, b0 & 0x0F
        if b0 & 0x70:
            raise WebSocketError("a WebSocket frame with reserved bits set (no extension agreed)")
        if opcode >= CLOSE:
            if opcode not in (CLOSE, PING, PONG):
                raise WebSocketError(f"unknown WebSocket control opcode {opcode:#x}")
            if not fin or length > 125:
                raise WebSocketError("a fragmented or oversized WebSocket control frame")
            self._ctl = bytearray()
        elif opcode == BINARY:
            if self._in_message:
                raise WebSocketError("a new WebSocket message inside a fragmented one")
            self._in_message = not fin
        elif opcode == CONTINUATION:
            if not self._in_message:
                raise WebSocketError("a WebSocket continuation frame with no message to continue")
            self._in_message = not fin
        elif opcode == TEXT:
            raise WebSocketError("a text WebSocket frame: MQTT travels in binary frames")
        else:
            raise WebSocketError(f"unknown WebSocket opcode {opcode:#x}")
        self._opcode = opcode

    def _on_control(self) -> None:
        payload = bytes(self._ctl)
        self._ctl = bytearray()
        if self._opcode == PING:
            self.control += frame(payload, PONG)
        elif self._opcode == CLOSE:
            if len(payload) == 1:
                raise WebSocketError("a WebSocket close frame with a 1-byte payload")
            code = int.from_bytes(payload[:2], "big") if payload else 1005
            self.close_code = code
            self.close_reason = payload[2:].decode("utf-8", "replace")
            self.control += frame(payload[:2], CLOSE)  # echo the code, as RFC 6455 5.5.1 asks

    def close_frame(self, code: int = 1000) -> bytes:
        """A close frame to send when the client ends the connection."""
        return frame(code.to_bytes(2, "big"), CLOSE)


def websocket_for(host: str, port: int, path: str, headers: Optional[Mapping[str, str]],
                  tls: bool) -> "Callable[[], WebSocket]":
    """What makes each connection's ``WebSocket`` (a fresh key per attempt); checks the
    arguments now, so a bad header raises at the call."""
    name = f"[{host}]" if ":" in host else host
    if port != (443 if tls else 80):
        name = f"{name}:{port}"
    WebSocket(name, path, headers)  # raises ValueError for a bad path or header
    return lambda: WebSocket(name, path, headers)


def _parse_head(head: bytes) -> Tuple[List[str], Dict[str, str]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise WebSocketError("an undecodable upgrade response") from None
    lines = text.split("\r\n")
    status = lines[0].split(" ", 2)
    if not status[0].startswith("HTTP/1."):
        raise WebSocketError(f"not an HTTP response to the WebSocket upgrade: {lines[0][:80]!r}")
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise WebSocketError(f"a malformed header in the upgrade response: {line[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return status, headers


__all__ = ["WebSocket", "WebSocketError", "accept_for", "frame", "websocket_for"]
