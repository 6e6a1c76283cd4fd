"""A broker-free stand-in MQTT peer for benchmarks, on loopback only.

The peer answers CONNECT with CONNACK (at the client's protocol level 3, 4 or 5), SUBSCRIBE with
SUBACK (granting the requested QoS), UNSUBSCRIBE with UNSUBACK and PINGREQ with PINGRESP, so a
client's own cost shows without a broker's. Then, per connection:

* ``discard`` mode (publishing benchmarks): every byte is read and thrown away, but the PUBLISH
  packets are counted from their fixed headers. QoS 1 PUBLISHes get a PUBACK and QoS 2 ones a
  PUBREC (then PUBREL gets PUBCOMP) unless ``ack=False``. Runs of identically-headed packets (what
  a benchmark sends) are counted and acknowledged by strided slicing at C speed, so the peer is
  never the bottleneck; anything else goes through a plain header-walking loop.
* ``replay`` mode (receiving benchmarks): after the first SUBACK on a connection, the peer writes
  pre-encoded PUBLISH frames as fast as the socket takes them: one block of frames (about
  ``block_bytes``) is built once and sent again and again, then a final part of it so the client
  gets exactly ``count`` messages (``count=None``: until the client goes away). For QoS 1/2 the
  packet ids are patched into the block (strided, at C speed), they cycle through 1..65535, and at
  most ``max_inflight`` (and the client's MQTT 5 receive maximum) messages are unacknowledged.

The peer runs in its own process (it must not share the GIL with the client under test), a
single-threaded ``selectors`` loop serving any number of connections, sequential or concurrent.
It exits when told to, when its parent goes away (end of file on its control pipe), or after
``max_lifetime`` seconds.

In a benchmark::

    with StandinPeer(mode="discard") as peer:      # start() binds 127.0.0.1:0
        port = peer.port
        ...                                         # client connects to 127.0.0.1:port
        peer.wait_for(publishes_received=n)
        print(peer.stats())

By hand: ``python benchmarks/standin_peer.py --mode discard --port 0`` prints the port on its first
line, then serves until Ctrl-C (printing the final stats as JSON on stdout).
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Dict, List, Optional

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_HERE)
try:
    from mqttfast import codec
except ImportError:  # run as a script from anywhere: the package is the repository's
    sys.path.insert(0, _REPO)
    from mqttfast import codec

__all__ = ["StandinPeer", "serve", "main", "HOST", "DEFAULT_TOPIC", "MAX_LIFETIME"]

HOST = "127.0.0.1"
DEFAULT_TOPIC = "standin/replay"
MAX_LIFETIME = 600.0  # seconds: the process exits after this even if nobody stops it
BLOCK_BYTES = 1 << 20  # replay block size
RECV_BYTES = 1 << 20  # the one receive buffer, shared by all connections
WBUF_HIGH = 4 << 20  # stop reading a connection while this much is queued to send to it
_FIRST_WINDOW = 64  # packets checked by the first strided look at a run
_COOLDOWN_BYTES = 16 << 10  # walked packet by packet after a strided look found no run

MODES = ("discard", "replay")

# First bytes of the replies the hot path builds: PUBACK, PUBREC, PUBREL, PUBCOMP.
_PUBACK, _PUBREC, _PUBREL, _PUBCOMP = 0x40, 0x50, 0x62, 0x70
_PINGRESP = b"\xd0\x00"
_ACK1 = b"\x40\x02"  # PUBACK and PUBREC heads, their packet id appended
_ACK2 = b"\x50\x02"
# Packet ids 1..65535, twice over so any run of up to 65535 consecutive ids is one slice.
_PID_HI = bytes((p >> 8) & 0xFF for p in range(1, 65536)) * 2
_PID_LO = bytes(p & 0xFF for p in range(1, 65536)) * 2

_COUNTERS = ("publishes_received", "bytes_received", "acks_sent", "acks_received",
             "publishes_sent", "bytes_sent", "pings", "subscribes")


class _Malformed(Exception):
    pass


class _Stop(Exception):
    pass


def _bulk_replies(buf: bytearray, poff: int, size: int, run: int, first: int) -> bytearray:
    """``run`` 4-byte acknowledgements whose packet ids are the two bytes at ``poff`` of each of
    ``run`` consecutive packets of ``size`` bytes, built by strided slicing."""
    out = bytearray(bytes((first, 2, 0, 0)) * run)
    out[2::4] = buf[poff:poff + run * size:size]
    out[3::4] = buf[poff + 1:poff + 1 + run * size:size]
    return out


class _Conn:
    __slots__ = (
        "id", "sock", "peer", "events", "closed", "tail", "skip", "skip_reply", "window",
        "cooldown", "wbuf", "out", "out_pos", "out_flen", "protocol", "client_id", "recv_max",
        "replaying", "remaining", "block", "block_view", "block_frames", "frame_len", "pid_off",
        "pid_idx", "rqos", "limit", "started", "base",
        # counters (see _COUNTERS); publishes_sent is completed replay blocks only
        "publishes_received", "bytes_received", "acks_sent", "acks_received", "publishes_sent",
        "bytes_sent", "pings", "subscribes",
    )

    def __init__(self, cid: int, sock: socket.socket, peer: Any) -> None:
        self.id = cid
        self.sock = sock
        self.peer = peer
        self.events = 0
        self.closed = False
        self.tail = b""  # an incomplete packet carried to the next read
        self.skip = 0  # bytes still to throw away of a PUBLISH already counted from its header
        self.skip_reply = b""  # the acknowledgement owed once that PUBLISH is complete
        self.window = _FIRST_WINDOW
        self.cooldown = 0
        self.wbuf = bytearray()  # whole packets queued to send
        self.out: Optional[memoryview] = None  # what is being sent now
        self.out_pos = 0
        self.out_flen = 0  # frame length when ``out`` is a replay block, else 0
        self.protocol = 4
        self.client_id: Optional[str] = None
        self.recv_max = 65535
        self.replaying = False
        self.remaining: Optional[int] = None
        self.block: Any = None
        self.block_view: Optional[memoryview] = None
        self.block_frames = 0
        self.frame_len = 0
        self.pid_off = 0
        self.pid_idx = 0
        self.rqos = 0
        self.limit = 65535
        self.started = 0  # replay frames handed to ``out`` (including the block in progress)
        self.base = (0,) * len(_COUNTERS)
        self.publishes_received = 0
        self.bytes_received = 0
        self.acks_sent = 0  # PUBACK, PUBREC, PUBREL, PUBCOMP
        self.acks_received = 0  # PUBACK, PUBCOMP (ends of replayed QoS 1/2 messages)
        self.publishes_sent = 0
        self.bytes_sent = 0
        self.pings = 0
        self.subscribes = 0

    def counters(self) -> tuple:
        sent = self.publishes_sent
        if self.out is not None and self.out_flen:
            sent += self.out_pos // self.out_flen
        return (self.publishes_received, self.bytes_received, self.acks_sent, self.acks_received,
                sent, self.bytes_sent, self.pings, self.subscribes)


class _Server:
    """The peer's event loop (runs in the peer process)."""

    def __init__(self, mode: str = "discard", count: Optional[int] = None,
                 topic: Optional[str] = None, payload_size: int = 64, qos: int = 0,
                 ack: bool = True, max_inflight: int = 65535, block_bytes: int = BLOCK_BYTES,
                 port: int = 0, max_lifetime: float = MAX_LIFETIME) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be 'discard' or 'replay', got {mode!r}")
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        if count is not None and count < 0:
            raise ValueError("count must be >= 0 or None (unbounded)")
        if not 1 <= max_inflight <= 65535:
            raise ValueError("max_inflight must be 1..65535")
        self.mode = mode
        self.replay = mode == "replay"
        self.count = count
        self.topic = topic
        self.payload = (b"standin-" * (payload_size // 8 + 1))[:payload_size]
        self.qos = qos
        self.ack = ack
        self.max_inflight = max_inflight
        self.block_bytes = max(1, block_bytes)
        self.max_lifetime = max_lifetime
        self.sel = selectors.DefaultSelector()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, port))
        self.lsock.listen(1024)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.sel.register(self.lsock, selectors.EVENT_READ, "listen")
        self.rbuf = bytearray(RECV_BYTES)
        self.rmv = memoryview(self.rbuf)
        self.conns: Dict[int, _Conn] = {}
        self.closed_conns: List[dict] = []
        self.closed_totals = [0] * len(_COUNTERS)
        self.accepted = 0
        self.errors = 0
        self.last_error = ""
        self.next_id = 0
        self.t0 = self.t_reset = time.monotonic()
        self.control_fd: Optional[int] = None
        self.control_buf = b""
        self.running = False
        self._blocks: Dict[tuple, bytes] = {}

    # ------------------------------------------------------------------ loop

    def add_control(self, fd: int) -> None:
        """Read line commands (``stats [reset] [conns]``, ``stop``) from ``fd``; its end stops."""
        os.set_blocking(fd, False)
        self.control_fd = fd
        self.sel.register(fd, selectors.EVENT_READ, "control")

    def run(self, report: float = 0.0) -> None:
        deadline = self.t0 + self.max_lifetime
        next_report = time.monotonic() + report if report > 0 else float("inf")
        last = self.totals()
        self.running = True
        sel = self.sel
        READ = selectors.EVENT_READ
        WRITE = selectors.EVENT_WRITE
        try:
            while self.running:
                now = time.monotonic()
                if now >= deadline:
                    break
                if now >= next_report:
                    tot = self.totals()
                    rin = (tot["publishes_received"] - last["publishes_received"]) / report
                    rout = (tot["publishes_sent"] - last["publishes_sent"]) / report
                    print(f"[standin] {self.mode}: {rin:,.0f} msg/s in, {rout:,.0f} msg/s out, "
                          f"{len(self.conns)} connections", file=sys.stderr, flush=True)
                    last = tot
                    next_report = now + report
                timeout = min(1.0, deadline - now, max(0.0, next_report - now))
                for key, mask in sel.select(timeout):
                    c = key.data
                    if type(c) is _Conn:
                        if mask & READ:
                            self._on_read(c)
                        if mask & WRITE and not c.closed:
                            self._flush(c)
                    elif c == "listen":
                        self._accept()
                    else:
                        self._on_control()
        except (_Stop, KeyboardInterrupt):
            pass
        finally:
            self.running = False

    def close(self) -> None:
        for c in list(self.conns.values()):
            self._close(c)
        try:
            self.sel.unregister(self.lsock)
        except (KeyError, ValueError):
            pass
        self.lsock.close()
        self.sel.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self.lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. out of file descriptors: keep serving the others
                self._error(f"accept: {e}")
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.next_id += 1
            self.accepted += 1
            c = _Conn(self.next_id, sock, addr)
            c.events = selectors.EVENT_READ
            self.conns[c.id] = c
            self.sel.register(sock, c.events, c)

    def _close(self, c: _Conn) -> None:
        if c.closed:
            return
        c.closed = True
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        vals = c.counters()
        for i, v in enumerate(vals):
            self.closed_totals[i] += v - c.base[i]
        self.closed_conns.append(self._conn_info(c))
        del self.closed_conns[:-1000]
        self.conns.pop(c.id, None)
        c.out = None
        c.block_view = None

    def _error(self, msg: str) -> None:
        self.errors += 1
        self.last_error = msg

    # ------------------------------------------------------------------ reading

    def _on_read(self, c: _Conn) -> None:
        sock = c.sock
        buf = self.rbuf
        mv = self.rmv
        fill = len(c.tail)
        if fill:
            buf[:fill] = c.tail
        for _ in range(16):
            try:
                n = sock.recv_into(mv[fill:])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(c)
                return
            if not n:
                self._close(c)
                return
            c.bytes_received += n
            end = fill + n
            pos = 0
            if c.skip:  # the rest of a long PUBLISH (fill is 0 then)
                if c.skip >= n:
                    c.skip -= n
                    if not c.skip:
                        self._skip_done(c)
                    continue
                pos = c.skip
                c.skip = 0
                self._skip_done(c)
            try:
                pos = self._parse(c, buf, pos, end)
            except Exception as e:  # malformed input or a codec refusal: drop the connection
                self._error(f"connection {c.id}: {type(e).__name__}: {e}")
                self._close(c)
                return
            if c.closed:
                return
            tail = end - pos
            if tail:
                if pos:
                    buf[:tail] = buf[pos:end]
                if tail == len(buf):  # one packet larger than the buffer (never a PUBLISH)
                    nbuf = bytearray(2 * len(buf))
                    nbuf[:tail] = buf
                    self.rbuf = buf = nbuf
                    self.rmv = mv = memoryview(nbuf)
            fill = tail
            if end < len(buf):  # a short read: the socket is drained
                break
        c.tail = bytes(buf[:fill]) if fill else b""
        if c.wbuf or c.replaying:
            self._flush(c)

    def _skip_done(self, c: _Conn) -> None:
        c.publishes_received += 1
        if c.skip_reply:
            c.wbuf += c.skip_reply
            c.acks_sent += 1
            c.skip_reply = b""

    def _parse(self, c: _Conn, buf: bytearray, pos: int, end: int) -> int:
        """Handle every packet in ``buf[pos:end]``; returns where the incomplete tail starts."""
        ack = self.ack
        while pos + 1 < end:
            if c.cooldown:
                # After a failed strided look: walk PUBLISHes one by one in a tight loop for
                # ``cooldown`` bytes (anything else goes to the general code below).
                lim = pos + c.cooldown
                if lim > end:
                    lim = end
                start = pos
                cnt = 0
                acks = 0
                wb = c.wbuf
                while pos + 2 < lim:
                    first = buf[pos] & 0xF6  # type and QoS, without DUP and RETAIN
                    b = buf[pos + 1]
                    if b < 0x80:
                        h = pos + 2
                    else:
                        b2 = buf[pos + 2]
                        if b2 >= 0x80:
                            break
                        b = (b & 0x7F) | (b2 << 7)
                        h = pos + 3
                    stop = h + b
                    if stop > end:
                        break
                    if first != 0x30:
                        if first != 0x32 and first != 0x34:
                            break
                        if ack:
                            poff = h + 2 + ((buf[h] << 8) | buf[h + 1])
                            if poff + 2 > stop:
                                break  # malformed: the general code says so
                            wb += _ACK1 if first == 0x32 else _ACK2
                            wb += buf[poff:poff + 2]
                            acks += 1
                    pos = stop
                    cnt += 1
                c.publishes_received += cnt
                c.acks_sent += acks
                left = c.cooldown - (pos - start)
                c.cooldown = left if left > 0 else 0
                if pos + 1 >= end:
                    break
            first = buf[pos]
            b = buf[pos + 1]
            if b < 0x80:
                hdr = 2
                size = 2 + b
            else:
                length = b & 0x7F
                shift = 7
                i = pos + 2
                while True:
                    if i >= end:
                        return pos
                    b = buf[i]
                    i += 1
                    length |= (b & 0x7F) << shift
                    if b < 0x80:
                        break
                    shift += 7
                    if shift > 21:
                        raise _Malformed("remaining length is longer than 4 bytes")
                hdr = i - pos
                size = hdr + length
            kind = first >> 4
            if 3 <= kind <= 7:
                # Fast path: a run of packets whose fixed headers (and, for QoS > 0 PUBLISH,
                # topic lengths) are byte-identical lies at a fixed stride; find its length with
                # strided slices and handle it in bulk.
                if not c.cooldown:
                    n = (end - pos) // size
                    if n > c.window:
                        n = c.window
                    if n >= 2:
                        qos = (first >> 1) & 3 if kind == 3 else 0
                        if qos == 3:
                            raise _Malformed("PUBLISH with QoS 3")
                        span = hdr + 2 if qos else hdr
                        if span > size:
                            raise _Malformed("PUBLISH too short for its topic length")
                        run = n
                        stop = pos + n * size
                        for o in range(span):
                            s = buf[pos + o:stop + o:size]
                            k = n - len(s.lstrip(s[:1]))
                            if k < run:
                                run = k
                                if run < 2:
                                    break
                        if run >= 2:
                            if kind == 3:
                                c.publishes_received += run
                                if qos and ack:
                                    t = pos + hdr
                                    poff = t + 2 + ((buf[t] << 8) | buf[t + 1])
                                    if poff + 2 > pos + size:
                                        raise _Malformed("PUBLISH too short for its packet id")
                                    c.wbuf += _bulk_replies(buf, poff, size, run,
                                                            _PUBACK if qos == 1 else _PUBREC)
                                    c.acks_sent += run
                            elif kind == 6:  # PUBREL -> PUBCOMP
                                c.wbuf += _bulk_replies(buf, pos + hdr, size, run, _PUBCOMP)
                                c.acks_sent += run
                            elif kind == 5:  # PUBREC (of a replayed QoS 2) -> PUBREL
                                c.wbuf += _bulk_replies(buf, pos + hdr, size, run, _PUBREL)
                                c.acks_sent += run
                            else:  # PUBACK, PUBCOMP
                                c.acks_received += run
                            pos += run * size
                            if run == n:
                                if c.window < 1 << 20:
                                    c.window <<= 2
                            else:
                                c.window = max(_FIRST_WINDOW, 2 * run)
                                if run < 16:  # short runs do not pay for the looks
                                    c.cooldown = _COOLDOWN_BYTES
                            continue
                        c.window = _FIRST_WINDOW
                        c.cooldown = _COOLDOWN_BYTES
                if pos + size > end:
                    if kind == 3:  # count it from its header, throw the rest away as it comes
                        qos = (first >> 1) & 3
                        if qos == 3:
                            raise _Malformed("PUBLISH with QoS 3")
                        reply = b""
                        if qos and ack:
                            t = pos + hdr
                            if t + 2 > end:
                                return pos
                            poff = t + 2 + ((buf[t] << 8) | buf[t + 1])
                            if poff + 2 > end:
                                return pos
                            reply = bytes((_PUBACK if qos == 1 else _PUBREC, 2,
                                           buf[poff], buf[poff + 1]))
                        c.skip = pos + size - end
                        c.skip_reply = reply
                        return end
                    return pos
                if kind == 3:
                    c.publishes_received += 1
                    qos = (first >> 1) & 3
                    if qos == 3:
                        raise _Malformed("PUBLISH with QoS 3")
                    if qos and ack:
                        t = pos + hdr
                        poff = t + 2 + ((buf[t] << 8) | buf[t + 1])
                        if poff + 2 > pos + size:
                            raise _Malformed("PUBLISH too short for its packet id")
                        c.wbuf += bytes((_PUBACK if qos == 1 else _PUBREC, 2,
                                         buf[poff], buf[poff + 1]))
                        c.acks_sent += 1
                elif kind == 6 or kind == 5:
                    if size < hdr + 2:
                        raise _Malformed("acknowledgement without a packet id")
                    c.wbuf += bytes((_PUBCOMP if kind == 6 else _PUBREL, 2,
                                     buf[pos + hdr], buf[pos + hdr + 1]))
                    c.acks_sent += 1
                else:
                    c.acks_received += 1
            else:
                if pos + size > end:
                    return pos
                self._cold(c, first, bytes(buf[pos:pos + size]))
                if c.closed:
                    return end
            if c.cooldown:
                left = c.cooldown - size
                c.cooldown = left if left > 0 else 0
            pos += size
        return pos

    def _cold(self, c: _Conn, first: int, data: bytes) -> None:
        kind = first >> 4
        if kind == 12:  # PINGREQ
            c.wbuf += _PINGRESP
            c.pings += 1
            return
        if kind == 14:  # DISCONNECT
            self._close(c)
            return
        if kind == 1:
            pkt = codec.decode(data, 4)  # a CONNECT carries its own protocol level
            c.protocol = pkt.protocol
            c.client_id = pkt.client_id
            if pkt.protocol == 5 and pkt.properties:
                c.recv_max = pkt.properties.get("receive_maximum", 65535)
            c.wbuf += codec.encode(codec.ConnAck(False, 0), c.protocol)
        elif kind == 8:
            pkt = codec.decode(data, c.protocol)
            c.wbuf += codec.encode(
                codec.SubAck(pkt.packet_id, [s.qos for s in pkt.subscriptions]), c.protocol)
            c.subscribes += 1
            if self.replay and not c.replaying:
                self._arm_replay(c, pkt.subscriptions[0])
        elif kind == 10:
            pkt = codec.decode(data, c.protocol)
            codes = [0] * len(pkt.topics) if c.protocol == 5 else []
            c.wbuf += codec.encode(codec.UnsubAck(pkt.packet_id, codes), c.protocol)
        # AUTH and anything a client should not send: ignored

    # ------------------------------------------------------------------ replay

    def _arm_replay(self, c: _Conn, sub: Any) -> None:
        qos = min(self.qos, sub.qos)  # as a broker would: the subscription caps the QoS
        topic = self.topic
        if topic is None:
            f = sub.topic
            topic = DEFAULT_TOPIC if ("+" in f or "#" in f or f.startswith("$")) else f
        frame = codec.encode_publish(topic, self.payload, qos, 1 if qos else 0,
                                     protocol=c.protocol)
        flen = len(frame)
        k = max(1, self.block_bytes // flen)
        c.rqos = qos
        c.frame_len = flen
        c.remaining = self.count
        c.replaying = True
        if qos:
            c.limit = min(self.max_inflight, c.recv_max)
            k = min(k, c.limit)
            c.pid_off = flen - len(self.payload) - 2 - (1 if c.protocol == 5 else 0)
            assert frame[c.pid_off:c.pid_off + 2] == b"\x00\x01"
            c.block = bytearray(frame * k)  # this connection's own: its ids are patched in
        else:
            key = (topic, c.protocol, k)
            block = self._blocks.get(key)
            if block is None:
                block = self._blocks[key] = frame * k
            c.block = block
        c.block_frames = k
        c.block_view = memoryview(c.block)

    def _next_block(self, c: _Conn) -> bool:
        r = c.remaining
        if r == 0:
            return False
        k = c.block_frames
        if r is not None and r < k:
            k = r
        flen = c.frame_len
        if c.rqos:
            if c.started - c.acks_received + k > c.limit:
                return False  # wait for acknowledgements
            idx = c.pid_idx
            off = c.pid_off
            blk = c.block
            blk[off:off + k * flen:flen] = _PID_HI[idx:idx + k]
            blk[off + 1:off + 1 + k * flen:flen] = _PID_LO[idx:idx + k]
            c.pid_idx = (idx + k) % 65535
        view = c.block_view
        c.out = view if k == c.block_frames else view[:k * flen]
        c.out_pos = 0
        c.out_flen = flen
        c.started += k
        if r is not None:
            c.remaining = r - k
        return True

    # ------------------------------------------------------------------ writing

    def _flush(self, c: _Conn) -> None:
        sock = c.sock
        while True:
            out = c.out
            if out is None:
                if c.wbuf:
                    wb = c.wbuf
                    c.wbuf = bytearray()
                    out = c.out = memoryview(wb)
                    c.out_pos = 0
                    c.out_flen = 0
                elif c.replaying and self._next_block(c):
                    out = c.out
                else:
                    break
            try:
                n = sock.send(out[c.out_pos:])
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._close(c)
                return
            c.bytes_sent += n
            c.out_pos += n
            if c.out_pos < len(out):
                break
            if c.out_flen:
                c.publishes_sent += len(out) // c.out_flen
            c.out = None
        ev = selectors.EVENT_READ if len(c.wbuf) < WBUF_HIGH else 0
        if c.out is not None:
            ev |= selectors.EVENT_WRITE
        if ev != c.events:  # never 0: a full wbuf means ``out`` is pending
            c.events = ev
            self.sel.modify(c.sock, ev, c)

    # ------------------------------------------------------------------ control and stats

    def _on_control(self) -> None:
        assert self.control_fd is not None
        try:
            data = os.read(self.control_fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        if not data:  # the parent went away
            raise _Stop()
        self.control_buf += data
        while b"\n" in self.control_buf:
            line, self.control_buf = self.control_buf.split(b"\n", 1)
            words = line.decode().split()
            if not words:
                continue
            if words[0] == "stats":
                st = self.stats(per_connection="conns" in words, reset="reset" in words)
                self._reply(st)
            elif words[0] == "stop":
                raise _Stop()
            else:
                self._reply({"error": f"unknown command {line.decode()!r}"})

    def _reply(self, obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def _conn_info(self, c: _Conn) -> dict:
        d = dict(zip(_COUNTERS, (v - b for v, b in zip(c.counters(), c.base, strict=True)), strict=True))
        d.update(id=c.id, client_id=c.client_id, protocol=c.protocol, open=not c.closed)
        return d

    def totals(self) -> dict:
        tot = list(self.closed_totals)
        for c in self.conns.values():
            for i, (v, b) in enumerate(zip(c.counters(), c.base, strict=True)):
                tot[i] += v - b
        return dict(zip(_COUNTERS, tot, strict=True))

    def stats(self, per_connection: bool = False, reset: bool = False) -> dict:
        now = time.monotonic()
        st: Dict[str, Any] = {"mode": self.mode, "port": self.port, "pid": os.getpid(),
                              "uptime": now - self.t0, "elapsed": now - self.t_reset,
                              "connections": self.accepted, "active": len(self.conns)}
        st.update(self.totals())
        st["errors"] = self.errors
        st["last_error"] = self.last_error
        if per_connection:
            st["per_connection"] = list(self.closed_conns) + [
                self._conn_info(c) for c in self.conns.values()]
        if reset:
            self.closed_totals = [0] * len(_COUNTERS)
            self.closed_conns = []
            self.accepted = 0
            self.errors = 0
            self.last_error = ""
            self.t_reset = now
            for c in self.conns.values():
                c.base = c.counters()
        return st


def serve(mode: str = "discard", port: int = 0, control_fd: Optional[int] = None,
          report: float = 0.0, announce: Any = None, **options: Any) -> dict:
    """Run a peer in this process until stopped; returns the final stats.

    ``announce(port)`` is called once the socket listens. ``control_fd``: read commands from it.
    """
    server = _Server(mode=mode, port=port, **options)
    if control_fd is not None:
        server.add_control(control_fd)
    if announce is not None:
        announce(server.port)
    try:
        server.run(report=report)
        return server.stats()
    finally:
        server.close()


# ---------------------------------------------------------------------- the parent's handle

def _reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    for f in (proc.stdin, proc.stdout):
        try:
            if f is not None:
                f.close()
        except OSError:
            pass


class StandinPeer:
    """A stand-in MQTT peer in its own process, on 127.0.0.1.

    ``mode``: ``"discard"`` (count and drop what clients publish, acknowledging QoS 1/2 when
    ``ack``) or ``"replay"`` (after a connection's first SUBACK, send it ``count`` PUBLISHes of
    ``payload_size`` bytes on ``topic`` at ``qos``; ``count=None`` sends until the client leaves;
    ``topic=None`` uses the subscribed filter when it has no wildcard, else ``standin/replay``;
    the QoS is capped by the subscription's). ``count`` is per connection and unused in discard
    mode. ``max_inflight`` bounds unacknowledged replayed QoS 1/2 messages. ``cpu`` pins the peer
    process to that CPU. The process exits after ``max_lifetime`` seconds whatever happens.
    """

    def __init__(self, mode: str = "discard", count: Optional[int] = None,
                 topic: Optional[str] = None, payload_size: int = 64, qos: int = 0,
                 ack: bool = True, *, max_inflight: int = 65535, block_bytes: int = BLOCK_BYTES,
                 max_lifetime: float = MAX_LIFETIME, port: int = 0,
                 cpu: Optional[int] = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be 'discard' or 'replay', got {mode!r}")
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        if count is not None and count < 0:
            raise ValueError("count must be >= 0 or None (unbounded)")
        self.mode = mode
        self.count = count
        self.topic = topic
        self.payload_size = payload_size
        self.qos = qos
        self.ack = ack
        self.max_inflight = max_inflight
        self.block_bytes = block_bytes
        self.max_lifetime = max_lifetime
        self.cpu = cpu
        self.port: Optional[int] = port or None
        self._want_port = port
        self._proc: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()
        self._finalizer: Any = None
        self.final_stats: Optional[dict] = None

    @property
    def address(self) -> tuple:
        return (HOST, self.port)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> List[str]:
        """The command line that starts the peer process."""
        cmd = [sys.executable, os.path.abspath(__file__), "--control", "--mode", self.mode,
               "--port", str(self._want_port), "--payload-size", str(self.payload_size),
               "--qos", str(self.qos), "--max-inflight", str(self.max_inflight),
               "--block-bytes", str(self.block_bytes), "--max-lifetime", str(self.max_lifetime)]
        if self.count is not None:
            cmd += ["--count", str(self.count)]
        if self.topic is not None:
            cmd += ["--topic", self.topic]
        if not self.ack:
            cmd.append("--no-ack")
        if self.cpu is not None:
            cmd += ["--cpu", str(self.cpu)]
        return cmd

    def start(self) -> int:
        """Start the peer process; returns the port it listens on (127.0.0.1)."""
        if self._proc is not None:
            raise RuntimeError("already started")
        env = dict(os.environ)
        env["PYTHONPATH"] = _REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
        proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=env, cwd=_REPO, text=True, bufsize=1)
        self._proc = proc
        self._finalizer = weakref.finalize(self, _reap, proc)
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line.strip().isdigit():
            self._finalizer()
            raise RuntimeError(f"stand-in peer failed to start (exit code {proc.poll()}, "
                               f"said {line!r})")
        self.port = int(line)
        return self.port

    def _ask(self, cmd: str) -> dict:
        proc = self._proc
        if proc is None:
            raise RuntimeError("not started")
        with self._lock:
            try:
                proc.stdin.write(cmd + "\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                line = proc.stdout.readline()  # type: ignore[union-attr]
            except (BrokenPipeError, ValueError, OSError):
                line = ""
        if not line:
            raise RuntimeError(f"stand-in peer is gone (exit code {proc.poll()})")
        return json.loads(line)

    def stats(self, reset: bool = False, per_connection: bool = False) -> dict:
        """Counts since the start (or the last reset): ``publishes_received``,
        ``bytes_received``, ``acks_sent``, ``acks_received``, ``publishes_sent``, ``bytes_sent``,
        ``pings``, ``subscribes``, ``connections`` (accepted), ``active``, ``errors``,
        ``elapsed``...; ``per_connection`` adds a list with each connection's counts.
        ``reset=True`` returns the counts and starts a new run from zero."""
        if self._proc is None and self.final_stats is not None:
            return self.final_stats
        words = ["stats"] + (["reset"] if reset else []) + (["conns"] if per_connection else [])
        return self._ask(" ".join(words))

    def reset(self) -> dict:
        return self.stats(reset=True)

    def wait_for(self, timeout: float = 30.0, interval: float = 0.005, **targets: int) -> dict:
        """Poll the stats until each named counter reaches (>=) its target; returns the stats.

        Raises ``TimeoutError`` (with the last stats) when they do not in ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if all(st[k] >= v for k, v in targets.items()):
                return st
            if time.monotonic() >= deadline:
                raise TimeoutError(f"stand-in peer did not reach {targets} in {timeout}s: {st}")
            time.sleep(interval)

    def stop(self, timeout: float = 5.0) -> Optional[dict]:
        """Stop the process; returns its final stats (or None if it could not say)."""
        proc = self._proc
        if proc is None:
            return self.final_stats
        final = None
        with self._lock:
            if proc.poll() is None:
                try:
                    proc.stdin.write("stop\n")  # type: ignore[union-attr]
                    proc.stdin.flush()  # type: ignore[union-attr]
                    line = proc.stdout.readline()  # type: ignore[union-attr]
                    final = json.loads(line) if line else None
                except (BrokenPipeError, ValueError, OSError):
                    final = None
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            else:  # it ended by itself (max_lifetime): its last line is its final stats
                try:
                    lines = proc.stdout.read().splitlines()  # type: ignore[union-attr]
                    final = json.loads(lines[-1]) if lines else None
                except (ValueError, OSError):
                    final = None
        self._finalizer()
        self._proc = None
        self.final_stats = final
        return final

    def __enter__(self) -> "StandinPeer":
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"StandinPeer(mode={self.mode!r}, port={self.port}, qos={self.qos}, "
                f"count={self.count}, running={self.running})")


# ---------------------------------------------------------------------- command line

def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="Broker-free stand-in MQTT peer on 127.0.0.1 for benchmarks. Prints the "
                    "port on the first line of stdout, then serves until Ctrl-C/SIGTERM (or "
                    "'stop' on stdin with --control, or --max-lifetime); prints the final "
                    "stats as JSON.")
    ap.add_argument("--mode", choices=MODES, default="discard")
    ap.add_argument("--port", type=int, default=0, help="0: any free port (default)")
    ap.add_argument("--count", type=int, default=None,
                    help="replay: messages per connection (default: until the client leaves)")
    ap.add_argument("--topic", default=None,
                    help="replay: topic (default: the subscribed filter if it has no wildcard)")
    ap.add_argument("--payload-size", type=int, default=64)
    ap.add_argument("--qos", type=int, choices=(0, 1, 2), default=0, help="replay: QoS")
    ap.add_argument("--no-ack", dest="ack", action="store_false",
                    help="discard: do not acknowledge QoS 1/2 PUBLISHes")
    ap.add_argument("--max-inflight", type=int, default=65535,
                    help="replay: unacknowledged QoS 1/2 messages at most")
    ap.add_argument("--block-bytes", type=int, default=BLOCK_BYTES,
                    help="replay: size of the pre-encoded block of frames")
    ap.add_argument("--max-lifetime", type=float, default=MAX_LIFETIME,
                    help="exit after this many seconds whatever happens (default 600)")
    ap.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    ap.add_argument("--report", type=float, default=0.0,
                    help="print rates to stderr every this many seconds")
    ap.add_argument("--control", action="store_true",
                    help="read commands from stdin: 'stats [reset] [conns]' (one JSON line "
                         "back), 'stop'; end of input stops")
    a = ap.parse_args(argv)
    if a.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {a.cpu})

    def on_term(signum: int, frame: Any) -> None:
        raise _Stop()

    signal.signal(signal.SIGTERM, on_term)

    def announce(port: int) -> None:
        print(port, flush=True)

    final = serve(mode=a.mode, port=a.port, control_fd=sys.stdin.fileno() if a.control else None,
                  report=a.report, announce=announce, count=a.count, topic=a.topic,
                  payload_size=a.payload_size, qos=a.qos, ack=a.ack,
                  max_inflight=a.max_inflight, block_bytes=a.block_bytes,
                  max_lifetime=a.max_lifetime)
    try:
        print(json.dumps(final), flush=True)
    except (BrokenPipeError, OSError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
