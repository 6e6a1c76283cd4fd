#!/usr/bin/env python
"""The bare-socket fan-out subscriber: the reference ``bench_scale.py`` compares
``mqttfast bench sub`` with.

    python benchmarks/scale_ref.py -p PORT -c 10000 -R 10000 --ifaddr 127.0.0.2,127.0.0.3 \\
        -t scale/fan --frame 104 -L 500000

One process, one ``selectors`` loop, ``-c`` non-blocking sockets (started at ``-R`` per second,
round robin over the ``--ifaddr`` source addresses). Each sends one pre-encoded CONNECT +
SUBSCRIBE (MQTT 3.1.1, QoS 0) and reads its CONNACK and SUBACK (9 bytes, checked). Once every
socket is subscribed (or failed), the line "N clients subscribed" goes to stderr, and from then
on it only reads and discards: ``recv_into`` one buffer and add up the bytes. The feed's
PUBLISH frames all have the same size (``--frame``), so deliveries = bytes // frame; no packet
is parsed. By default it reads whatever is ready at once; ``--pause-ms`` sleeps after each pass
over the ready sockets, so that deliveries pile up in them. It stops once ``-L`` deliveries have
arrived, after ``--idle`` seconds without a byte (once something arrived), or at ``--timeout``,
and prints one JSON line on stdout: deliveries, the first and last delivery (``time.monotonic``,
the same clock in every process) and its own CPU time while receiving.

This is about as little as a Python subscriber can do per delivery, so the broker, not this
process, sets its rate: what ``mqttfast bench sub`` should match.
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

HANDSHAKE = 9  # CONNACK (4 bytes) + SUBACK with one reason code (5 bytes)


def _raise_nofile(need: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _subscribe_all(sel: selectors.BaseSelector, port: int, n: int, rate: float,
                   sources: List[str], topic: str, timeout: float) -> Dict[str, Any]:
    """Connect and subscribe ``n`` sockets; registered in ``sel`` for reading, ``key.data`` is
    the socket's ``recv_into``."""
    from mqttfast.codec import Connect, Subscribe, encode

    subscribe = encode(Subscribe(1, [(topic, 0)]), 4)
    pid = os.getpid()
    hello = [encode(Connect(f"rawsub_{pid}_{i}", 4, True, 300), 4) + subscribe for i in range(n)]
    shake: Dict[int, bytes] = {}
    ok = failed = started = 0
    t0 = time.monotonic()
    deadline = t0 + timeout

    def fail(sock: socket.socket) -> None:
        nonlocal failed
        failed += 1
        sel.unregister(sock)
        sock.close()

    while ok + failed < n and time.monotonic() < deadline:
        now = time.monotonic()
        due = n if rate <= 0 else min(n, int((now - t0) * rate) + 1)
        while started < due:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind((sources[started % len(sources)], 0))
            sock.connect_ex(("127.0.0.1", port))
            sel.register(sock, selectors.EVENT_WRITE, started)
            started += 1
        for key, mask in sel.select(0.001):
            sock = key.fileobj  # type: ignore[assignment]
            if mask & selectors.EVENT_WRITE:
                try:
                    sock.send(hello[key.data])  # a few dozen bytes: one send
                    sel.modify(sock, selectors.EVENT_READ, key.data)
                except OSError:
                    fail(sock)
                continue
            if callable(key.data):  # subscribed, and a delivery already: left for _count
                continue
            try:
                data = sock.recv(HANDSHAKE - len(shake.get(key.data, b"")))
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                fail(sock)
                continue
            got = shake.pop(key.data, b"") + data
            if len(got) < HANDSHAKE:
                shake[key.data] = got
                continue
            # CONNACK accepted, SUBACK granted QoS 0 (not 0x80)
            if got[0] == 0x20 and got[3] == 0 and got[4] == 0x90 and got[8] < 0x80:
                ok += 1
                sel.modify(sock, selectors.EVENT_READ, sock.recv_into)
            else:
                fail(sock)
    for key in list(sel.get_map().values()):
        if not callable(key.data):  # still connecting at the deadline
            fail(key.fileobj)  # type: ignore[arg-type]
    failed += n - started  # never started: the deadline came first
    return {"subscribed": ok, "failed": failed,
            "subscribe_seconds": round(time.monotonic() - t0, 3)}


def _count(sel: selectors.BaseSelector, want: int, idle: float, timeout: float, pause: float
           ) -> Dict[str, Any]:
    """Read and discard until ``want`` bytes arrived, ``idle`` seconds passed without one (once
    something arrived) or ``timeout``; after each pass over the ready sockets, sleep ``pause``
    seconds (if not 0). The hot loop of this module."""
    buf = bytearray(1 << 16)
    total = dropped = 0
    first = last = 0.0
    select = sel.select
    monotonic = time.monotonic
    cpu0 = _cpu()
    deadline = monotonic() + timeout
    while total < want and last < deadline:
        events = select(0.1)
        if not events:
            now = monotonic()
            if (first and now - last > idle) or now > deadline:
                break
            continue
        for key, _ in events:
            try:
                got = key.data(buf)
            except BlockingIOError:
                continue
            except OSError:
                got = 0
            if got:
                total += got
            else:
                dropped += 1
                sel.unregister(key.fileobj)
        last = monotonic()
        if not first:
            first = last
        if pause:
            time.sleep(pause)
    return {"bytes": total, "dropped": dropped, "first_recv": first or None,
            "last_recv": last or None, "cpu_seconds": round(_cpu() - cpu0, 3)}


def fanout(port: int, n: int, rate: float, sources: List[str], topic: str, frame: int,
           limit: int, idle: float, timeout: float, pause: float = 0.0) -> Dict[str, Any]:
    """Subscribe ``n`` sockets, count the deliveries, print the result as one JSON line (then
    close the sockets) and return it."""
    sel = selectors.DefaultSelector()
    out = _subscribe_all(sel, port, n, rate, sources, topic, min(timeout, 60.0))
    print(f"{out['subscribed']} clients subscribed", file=sys.stderr, flush=True)
    if out["subscribed"]:
        out.update(_count(sel, limit * frame if limit else 1 << 62, idle, timeout, pause))
        span = (out["last_recv"] or 0) - (out["first_recv"] or 0)
        out.update({"pause_ms": pause * 1000, "frame": frame, "deliveries": out["bytes"] // frame,
                    "leftover_bytes": out["bytes"] % frame,
                    "receive_seconds": round(span, 3) if span > 0 else None,
                    "receive_rate": out["bytes"] // frame / span if span > 0 else None})
    print(json.dumps(out), flush=True)
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-p", "--port", type=int, required=True, help="broker port on 127.0.0.1")
    ap.add_argument("-c", "--count", type=int, default=1000, help="subscribers")
    ap.add_argument("-R", "--conn-rate", type=float, default=10_000,
                    help="connection starts per second (0: all at once)")
    ap.add_argument("--ifaddr", default="127.0.0.1",
                    help="source addresses (127.0.0.0/8), comma-separated, round robin")
    ap.add_argument("-t", "--topic", required=True, help="topic filter (QoS 0)")
    ap.add_argument("--frame", type=int, required=True, help="bytes of every PUBLISH frame")
    ap.add_argument("-L", "--limit", type=int, default=0,
                    help="deliveries (over all sockets) to stop at (0: none)")
    ap.add_argument("--pause-ms", type=float, default=0.0,
                    help="sleep MS ms after each pass over the ready sockets, so that deliveries "
                         "pile up in them (0: read whatever arrives at once)")
    ap.add_argument("--idle", type=float, default=3.0, help="stop after S seconds without data")
    ap.add_argument("--timeout", type=float, default=120.0, help="stop after S seconds")
    args = ap.parse_args()
    _raise_nofile(args.count + 100)
    sources = args.ifaddr.split(",")
    if not all(a.startswith("127.") for a in sources):
        ap.error("--ifaddr: loopback (127.0.0.0/8) addresses only")
    fanout(args.port, args.count, args.conn_rate, sources, args.topic, args.frame, args.limit,
           args.idle, args.timeout, args.pause_ms / 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
