#!/usr/bin/env python
"""mqttfast.websocket's framer against wsproto's, on what the loop asks of it, in the same run.

    python benchmarks/bench_ws_framer.py          # 3 runs

- ``send``: frame (mask) one 64 KiB buffer, the size of a busy flush of the session's stream;
- ``send-small``: frame one 40-byte buffer (a lone QoS 0 publish);
- ``receive``: turn 1,000 unmasked server frames of 20 bytes (a burst of small messages, one per
  frame as mosquitto sends them) back into the byte stream, fed in 4 KiB chunks.

Figures are operations per second and wsproto's time over ours (above 1: ours is faster), as the
median of the runs with the spread. wsproto is only needed to run this (pip install wsproto).
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from mqttfast.websocket import WebSocket, accept_for, frame  # noqa: E402

BIG = os.urandom(64 * 1024)
SMALL = os.urandom(40)
FRAMES = b"".join(b"\x82\x14" + os.urandom(20) for _ in range(1000))
CHUNKS = [FRAMES[i:i + 4096] for i in range(0, len(FRAMES), 4096)]


def rate(fn: Callable[[], object], seconds: float = 0.5) -> float:
    n, started = 0, time.perf_counter()
    while True:
        for _ in range(20):
            fn()
        n += 20
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return n / elapsed


def ours() -> Dict[str, Callable[[], object]]:
    ws = WebSocket("h")
    ws.receive_handshake(b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Accept: "
                         + accept_for(ws.key) + b"\r\n\r\n")

    def receive() -> object:
        return [ws.receive(c) for c in CHUNKS]

    return {"send": lambda: frame(BIG), "send-small": lambda: frame(SMALL), "receive": receive}


def theirs() -> Dict[str, Callable[[], object]]:
    from wsproto import ConnectionType
    from wsproto.connection import Connection
    from wsproto.events import BytesMessage

    conn = Connection(ConnectionType.CLIENT)

    def receive() -> object:
        out = []
        for c in CHUNKS:
            conn.receive_data(c)
            out += [e.data for e in conn.events() if isinstance(e, BytesMessage)]
        return out

    return {"send": lambda: conn.send(BytesMessage(BIG)),
            "send-small": lambda: conn.send(BytesMessage(SMALL)), "receive": receive}


def main() -> int:
    runs: Dict[str, List[float]] = {}
    for run in range(3):
        a, b = ours(), theirs()
        for name in a:
            mine, other = rate(a[name]), rate(b[name])
            runs.setdefault(name, []).append(mine / other)
            print(f"run {run + 1} {name:10s} mqttfast {mine:12,.0f}/s  wsproto {other:12,.0f}/s  "
                  f"{mine / other:.2f}x", flush=True)
    for name, ratios in runs.items():
        print(f"{name:10s} mqttfast.websocket / wsproto speed: {statistics.median(ratios):.2f}x "
              f"(spread {min(ratios):.2f}..{max(ratios):.2f}, 3 runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
