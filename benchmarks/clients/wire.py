"""Hand-encoded MQTT 3.1.1 and MQTT 5 frames and the raw-socket roles (no MQTT library at all).

Every role takes ``protocol`` from the spec (4: MQTT 3.1.1, the default; 5: MQTT 5). An MQTT 5
frame differs only by its property lengths: CONNECT and SUBSCRIBE carry an empty property block,
and every PUBLISH one zero byte (no properties) after its topic and packet id, so each MQTT 5 row
has a ceiling of its own protocol (one byte longer per message than MQTT 3.1.1's).

* ``publish`` with ``qos=0``: the **raw QoS 0 ceiling** (and, with ``ping``, the feeder of the
  receive benchmark): one pre-encoded block of identical PUBLISH frames (about ``BLOCK_BYTES``)
  written with ``sendall`` again and again, then the remainder.
* ``publish`` with ``qos=1``: the **raw QoS 1 ceiling**: the 65,535 frames with packet ids
  1..65535 pre-encoded once as a ring, written in chunks of ``CHUNK_FRAMES`` with at most
  ``window`` (<= 65,535) unacknowledged, so no id is reused before its PUBACK; a reader thread
  counts PUBACKs (4-byte frames, counted and checked by strided slicing, at C speed).
* ``subscriber``: the **confirming subscriber** of every publish run (and, as ``receive``, the
  raw-socket reader of the receive runs): subscribes at QoS 0 and counts the PUBLISH frames it
  receives. They are all the same length (one topic, one payload
  size, QoS 0 so no packet id), so it counts bytes, checking each frame's first two bytes by
  strided slicing. It never falls behind the broker.
* ``backlog``: the raw-socket reader of the backlog runs: the same count, on a session that
  outlives its connection and is resumed after the broker has queued the feed.

None of this is a client: no keep-alive (``keepalive=0``), no retries, nothing decoded that is
not needed. It is what "as fast as the socket and the broker allow, from Python" means.
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any, Dict

from .child import SESSION_EXPIRY, Control, payload_of

perf_counter = time.perf_counter

BLOCK_BYTES = 1 << 20  # one QoS 0 sendall
CHUNK_FRAMES = 4096  # QoS 1 frames per sendall (about 330 KB at 64-byte payloads)
RECV_BYTES = 1 << 20
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
PUBLISH_QOS0 = 0x30
PUBACK = 0x40


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _props(protocol: int) -> bytes:
    """An empty MQTT 5 property block (its length, 0); nothing before MQTT 5."""
    return b"\x00" if protocol == 5 else b""


def connect_frame(client_id: str, keepalive: int = 0, clean: bool = True,
                  protocol: int = 4) -> bytes:
    """CONNECT. ``clean=False`` asks for a session that outlives the connection (MQTT 5: clean
    start 0 and a Session Expiry Interval of ``SESSION_EXPIRY``)."""
    body = _str("MQTT") + bytes((protocol, 0x02 if clean else 0)) + struct.pack("!H", keepalive)
    if protocol == 5 and not clean:
        body += b"\x05\x11" + struct.pack("!I", SESSION_EXPIRY)
    else:
        body += _props(protocol)
    body += _str(client_id)
    return b"\x10" + varint(len(body)) + body


def publish_frame(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0,
                  protocol: int = 4) -> bytes:
    body = (_str(topic) + (struct.pack("!H", packet_id) if qos else b"") + _props(protocol)
            + payload)
    return bytes((0x30 | qos << 1,)) + varint(len(body)) + body


def subscribe_frame(packet_id: int, topic: str, qos: int = 0, protocol: int = 4) -> bytes:
    body = struct.pack("!H", packet_id) + _props(protocol) + _str(topic) + bytes((qos,))
    return b"\x82" + varint(len(body)) + body


def _protocol(spec: Dict[str, Any]) -> int:
    return int(spec.get("protocol") or 4)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        data += chunk
    return data


def _recv_packet(sock: socket.socket) -> bytes:
    """One whole packet (fixed header included); only for the handshake, not the hot path."""
    head = _recv_exactly(sock, 2)
    length, shift, i = head[1] & 0x7F, 7, 1
    while head[i] & 0x80:
        head += _recv_exactly(sock, 1)
        i += 1
        length |= (head[i] & 0x7F) << shift
        shift += 7
    return head + _recv_exactly(sock, length)


def open_session(spec: Dict[str, Any], clean: bool = True) -> socket.socket:
    """Connect, send CONNECT (the spec's protocol, a clean session unless ``clean`` is false, no
    keep-alive), check the CONNACK (an MQTT 5 one carries properties: read it whole)."""
    sock = socket.create_connection((spec["host"], spec["port"]), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_frame(spec["client_id"], clean=clean, protocol=_protocol(spec)))
    connack = _recv_packet(sock)
    if connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"connection refused: CONNACK {connack.hex()}")
    sock.settimeout(None)
    return sock


def publish(spec: Dict[str, Any], ctl: Control) -> None:
    if spec["qos"] == 0:
        _publish_qos0(spec, ctl)
    elif spec["qos"] == 1:
        _publish_qos1(spec, ctl)
    else:
        raise ValueError("the raw ceiling is QoS 0 or 1")


def _publish_qos0(spec: Dict[str, Any], ctl: Control) -> None:
    n = spec["n"]
    frame = publish_frame(spec["topic"], payload_of(spec["payload_size"]), 0,
                          protocol=_protocol(spec))
    per_block = max(1, BLOCK_BYTES // len(frame))
    block = frame * min(per_block, n)
    full, rest = divmod(n, per_block)
    tail = block[:rest * len(frame)]
    sock = open_session(spec)
    ctl.ready()
    ctl.wait_go()
    sendall = sock.sendall
    t0 = perf_counter()
    for _ in range(full):
        sendall(block)
    if rest:
        sendall(tail)
    t_written = perf_counter()
    ctl.emit("queued", t_queued=t_written)
    t_ponged = None
    if spec.get("ping"):  # the broker answers only after it has read everything before it
        sendall(PINGREQ)
        if _recv_exactly(sock, 2) != b"\xd0\x00":
            raise ConnectionError("expected PINGRESP")
        t_ponged = perf_counter()
    sendall(DISCONNECT)
    sock.close()
    ctl.result(t0=t0, t_done=t_written, t_written=t_written, t_ponged=t_ponged, sent=n,
               completed=n, ok=True, frame_bytes=len(frame))


def _publish_qos1(spec: Dict[str, Any], ctl: Control) -> None:
    n = spec["n"]
    window = max(1, min(int(spec.get("window") or 65535), 65535))
    payload = payload_of(spec["payload_size"])
    topic = spec["topic"]
    protocol = _protocol(spec)
    flen = len(publish_frame(topic, payload, 1, 1, protocol))
    ring = b"".join(publish_frame(topic, payload, 1, pid, protocol) for pid in range(1, 65536))
    ringv = memoryview(ring)
    sock = open_session(spec)
    state: Dict[str, Any] = {"acked": 0, "bad": None, "t_acked": None}
    more = threading.Event()  # set by the reader whenever acknowledgements arrived
    finished = threading.Event()

    def reader() -> None:
        buf = bytearray(RECV_BYTES)
        mv = memoryview(buf)
        fill = 0
        alen = 0  # PUBACK length: 4, or 5 for an MQTT 5 one that spells out its reason code
        try:
            while state["acked"] < n:
                got = sock.recv_into(mv[fill:])
                if not got:
                    state["bad"] = "connection closed by the broker"
                    break
                fill += got
                if not alen:
                    if fill < 2:
                        continue
                    alen = 2 + buf[1]
                    if alen not in (4, 5):
                        state["bad"] = f"unexpected packet among the PUBACKs: {buf[:8].hex()}"
                        break
                whole = fill - fill % alen
                frames = whole // alen
                if (buf[0:whole:alen].count(PUBACK) != frames
                        or buf[1:whole:alen].count(alen - 2) != frames
                        or (alen == 5 and buf[4:whole:alen].count(0) != frames)):
                    state["bad"] = "unexpected packet among the PUBACKs"
                    break
                state["acked"] += frames
                if fill > whole:
                    buf[:fill - whole] = buf[whole:fill]
                fill -= whole
                more.set()
            state["t_acked"] = perf_counter()
        except OSError as e:
            state["bad"] = f"{type(e).__name__}: {e}"
        finally:
            finished.set()
            more.set()

    ctl.ready()
    ctl.wait_go()
    sendall = sock.sendall
    threading.Thread(target=reader, name="raw-puback-reader", daemon=True).start()
    t0 = perf_counter()
    deadline = time.monotonic() + spec["timeout"]
    sent = 0
    waits = 0
    while sent < n and not finished.is_set() and time.monotonic() < deadline:
        room = state["acked"] + window - sent
        if room <= 0:
            more.clear()
            if state["acked"] + window - sent <= 0:
                waits += 1
                more.wait(1.0)
            continue
        k = min(room, CHUNK_FRAMES, n - sent)
        start = sent % 65535
        end = start + k
        if end <= 65535:
            sendall(ringv[start * flen:end * flen])
        else:
            sendall(ringv[start * flen:])
            sendall(ringv[:(end - 65535) * flen])
        sent += k
    t_written = perf_counter()
    ctl.emit("queued", t_queued=t_written)
    timed_out = not finished.wait(max(0.0, deadline - time.monotonic()))
    t_acked = state["t_acked"]
    acked = state["acked"]
    try:
        sock.sendall(DISCONNECT)
    except OSError:
        pass
    sock.close()
    ctl.result(t0=t0, t_done=t_acked, t_written=t_written, sent=sent, completed=acked,
               ok=acked >= n and state["bad"] is None, error=state["bad"], timed_out=timed_out,
               window=window,
               window_waits=waits, frame_bytes=flen)


SUBSCRIBER_LOWAT = 16 * 1024  # the confirming subscriber's socket low-water mark
SUBSCRIBER_POLL = 0.002  # its wait before it reads what is there anyway


def subscriber(spec: Dict[str, Any], ctl: Control, batch: bool = True) -> None:
    """Count the ``n`` QoS 0 messages of one topic; report first/last arrival times.

    As the publish scenarios' confirming subscriber (``batch``) it reads in batches: the kernel
    wakes it once ``SUBSCRIBER_LOWAT`` bytes wait (``SO_RCVLOWAT``), or after
    ``SUBSCRIBER_POLL`` it reads what is there. Woken for every segment it spent 2.1 s of CPU on
    200,000 messages, a core's worth taken from the broker and the publisher under test on a
    2-core machine (so that every microsecond a publisher spent came off the broker's rate);
    batched, it spends a few hundredths of a second, and the run's end is late by at most the
    poll (2 ms). As the receive scenarios' raw reader (``receive``) it reads every segment at
    once, like the clients it is compared with."""
    sock = open_session(spec)
    _subscribe(sock, spec)
    ctl.ready()
    _count(sock, spec, ctl, batch)


def _subscribe(sock: socket.socket, spec: Dict[str, Any]) -> None:
    sock.sendall(subscribe_frame(1, spec["topic"], 0, _protocol(spec)))
    suback = _recv_packet(sock)
    if suback[0] != 0x90 or suback[-1] >= 0x80:
        raise ConnectionError(f"subscription refused: SUBACK {suback.hex()}")


def _count(sock: socket.socket, spec: Dict[str, Any], ctl: Control, batch: bool,
           **info: Any) -> None:
    """Read and count the ``n`` QoS 0 PUBLISHes of one topic, then report (with ``info``)."""
    n = spec["n"]
    frame = publish_frame(spec["topic"], payload_of(spec["payload_size"]), 0,
                          protocol=_protocol(spec))
    flen = len(frame)
    rl_byte = frame[1]
    deadline = time.monotonic() + spec["timeout"]
    lowat = SUBSCRIBER_LOWAT if batch and hasattr(socket, "SO_RCVLOWAT") else 1
    low = lowat  # what the socket has now
    if lowat > 1:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
    sock.settimeout(SUBSCRIBER_POLL if lowat > 1 else 0.05)
    buf = bytearray(RECV_BYTES)
    mv = memoryview(buf)
    fill = 0
    count = 0
    t_first = t_last = None
    bad = None
    stop = ctl.stop
    timed_out = False
    while count < n:
        try:
            got = sock.recv_into(mv[fill:])
        except socket.timeout:
            if stop.is_set():
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            if low > 1:  # fewer bytes than the mark wait: read them (the run may be ending)
                low = 1
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            continue
        if low != lowat:
            low = lowat
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
        if not got:
            bad = "connection closed by the broker"
            break
        now = perf_counter()
        if t_first is None:
            t_first = now
        fill += got
        whole = fill - fill % flen
        frames = whole // flen
        if frames:
            if (buf[0:whole:flen].count(PUBLISH_QOS0) != frames
                    or buf[1:whole:flen].count(rl_byte) != frames):
                bad = "unexpected packet among the PUBLISHes"
                break
            count += frames
            t_last = now
            if fill > whole:
                buf[:fill - whole] = buf[whole:fill]
            fill -= whole
        if stop.is_set():
            break
    try:
        sock.sendall(DISCONNECT)
    except OSError:
        pass
    sock.close()
    ctl.result(received=count, t_first=t_first, t_last=t_last, ok=count >= n and bad is None,
               error=bad, timed_out=timed_out, **info)


def backlog(spec: Dict[str, Any], ctl: Control) -> None:
    """The **raw-socket reader** of the backlog scenarios: subscribe on a session that outlives
    the connection, disconnect, say ready; at ``go`` (the broker holds the feed by then)
    reconnect to that session and count like ``receive``. ``t0`` is taken before connecting."""
    sock = open_session(spec, clean=False)
    _subscribe(sock, spec)
    sock.sendall(DISCONNECT)
    sock.close()
    ctl.ready()
    ctl.wait_go(spec["timeout"])
    t0 = perf_counter()
    sock = open_session(spec, clean=False)
    _count(sock, spec, ctl, batch=False, t0=t0)


def receive(spec: Dict[str, Any], ctl: Control) -> None:
    """The **raw-socket reader** of the receive scenarios: the confirming subscriber, timed
    like any client under test (it stops at the N-th message; the feeder sends a margin more)."""
    subscriber(spec, ctl, batch=False)
