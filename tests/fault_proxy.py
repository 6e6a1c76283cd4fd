"""A loopback TCP proxy that injects faults between an MQTT client and a real broker (issue 9).

``FaultProxy(upstream_port, seed=...)`` listens on 127.0.0.1 on a free port (``.port``); each
connection accepted there is joined to a new connection to the broker and pumped both ways by two
threads. While ``faults_enabled`` is set, every connection carries one planned fault, drawn from a
``random.Random`` seeded by ``(seed, connection number)``: a direction (client -> broker or broker
-> client), a byte count at which it strikes (so it lands at a random point of the stream, usually
in the middle of a packet), and a kind:

- ``drop``: forward up to the fault point, then close both sockets (FIN);
- ``truncate``: forward part of the chunk that holds the fault point, then close (FIN) - the peer
  sees half a packet and then end of stream;
- ``reset``: the same cut, then close both sockets with ``SO_LINGER`` 0, so the peers get an RST;
- ``delay``: hold the chunk for a random 50-400 ms, then go on (the connection survives and gets
  its next fault planned);
- ``stall``: stop forwarding in both directions for ``stall_seconds`` with both sockets left open
  (bytes pile up in the kernel buffers; only the client's keep-alive can tell), then resume (by
  then the client has usually given up and reconnected, and the resumed link dies on its own).

What struck is logged in ``.faults`` as ``(connection, kind, direction, byte offset)``. When the
broker cannot be reached the client side is closed at once (as if the broker were down).
``close()`` stops everything; every thread is a daemon and every blocking call has a timeout.
Loopback only; no data is invented, only cut, delayed or withheld.
"""
from __future__ import annotations

import random
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

HOST = "127.0.0.1"
KINDS = ("drop", "delay", "stall", "truncate", "reset")
UP, DOWN = "client->broker", "broker->client"
POLL = 0.05  # how often a blocked pump looks at the stop and stall flags
SEND_TIMEOUT = 10.0


@dataclass
class Plan:
    """The next fault of one connection."""

    kind: str
    direction: str
    at: int  # bytes forwarded in ``direction`` on this connection before it strikes


class _Link:
    """One proxied connection: the client's socket, the broker's, and the fault plan."""

    def __init__(self, proxy: "FaultProxy", number: int, client: socket.socket,
                 broker: socket.socket) -> None:
        self.proxy = proxy
        self.number = number
        self.client = client
        self.broker = broker
        self.rng = random.Random(f"{proxy.seed}/{number}")
        self.sent = {UP: 0, DOWN: 0}
        self.lock = threading.Lock()
        self.closed = False
        self.stalled_until = 0.0
        self.plan: Optional[Plan] = self._next_plan()

    def _next_plan(self) -> Optional[Plan]:
        if not self.proxy.faults_enabled:
            return None
        rng = self.rng
        kind = rng.choice(self.proxy.kinds)
        direction = UP if rng.random() < self.proxy.up_share else DOWN
        scale = self.proxy.mean_bytes if direction == UP else self.proxy.mean_bytes // 8
        return Plan(kind, direction, self.sent[direction] + rng.randint(1, 2 * max(1, scale)))

    def start(self) -> None:
        for src, dst, direction in ((self.client, self.broker, UP), (self.broker, self.client, DOWN)):
            threading.Thread(target=self._pump, args=(src, dst, direction), daemon=True,
                             name=f"fault-proxy-{self.number}-{direction}").start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        # A generous timeout on the sockets bounds a send to a peer that stopped reading; the
        # select bounds each wait for input, so the stop and stall flags are seen.
        src.settimeout(SEND_TIMEOUT)
        try:
            while not self.closed and not self.proxy.stopping:
                if time.monotonic() < self.stalled_until:
                    time.sleep(POLL)  # stalled: read nothing, so the kernel buffers fill
                    continue
                if not select.select([src], [], [], POLL)[0]:
                    continue
                chunk = src.recv(65536)
                if not chunk:
                    break
                if not self._forward(chunk, dst, direction):
                    return
        except OSError:
            pass
        self.shut(linger0=False)

    def _forward(self, chunk: bytes, dst: socket.socket, direction: str) -> bool:
        """Send ``chunk`` on, applying the fault that falls inside it; False once closed."""
        with self.lock:
            plan = self.plan
            if (plan is None) == self.proxy.faults_enabled:  # faults turned on or off since
                plan = self.plan = self._next_plan()
            start = self.sent[direction]
            hit = (plan is not None and plan.direction == direction
                   and start + len(chunk) >= plan.at)
            if not hit:
                self.sent[direction] = start + len(chunk)
        if not hit:
            dst.sendall(chunk)
            return True
        assert plan is not None
        cut = max(0, min(len(chunk), plan.at - start))
        self.proxy._record(self.number, plan.kind, direction, plan.at)
        if plan.kind in ("truncate", "reset"):
            cut = min(cut, len(chunk) - 1) if len(chunk) > 1 else 0
            dst.sendall(chunk[:cut])
            self.shut(linger0=plan.kind == "reset")
            return False
        if plan.kind == "drop":
            dst.sendall(chunk[:cut])
            self.shut(linger0=False)
            return False
        if plan.kind == "delay":
            time.sleep(self.rng.uniform(0.05, 0.4))
        elif plan.kind == "stall":
            self.stalled_until = time.monotonic() + self.proxy.stall_seconds
            while time.monotonic() < self.stalled_until and not self.closed:
                time.sleep(POLL)
            if self.closed:
                return False
        with self.lock:
            self.sent[direction] = start + len(chunk)
            self.plan = self._next_plan()
        dst.sendall(chunk)
        return True

    def shut(self, linger0: bool) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        self.stalled_until = 0.0
        for sock in (self.client, self.broker):
            try:
                if linger0:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class FaultProxy:
    """See the module docstring. ``kinds``: the faults to draw from; ``mean_bytes``: the mean
    distance (client -> broker bytes; an eighth of it the other way) between two faults;
    ``up_share``: how often a fault strikes the client -> broker direction."""

    def __init__(self, upstream_port: int, *, seed: int, kinds: Sequence[str] = KINDS,
                 mean_bytes: int = 20_000, up_share: float = 0.6, stall_seconds: float = 5.0,
                 upstream_host: str = HOST) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {KINDS}")
        self.upstream = (upstream_host, upstream_port)
        self.seed = seed
        self.kinds = tuple(kinds)
        self.mean_bytes = mean_bytes
        self.up_share = up_share
        self.stall_seconds = stall_seconds
        self.faults_enabled = True
        self.stopping = False
        self.faults: List[Tuple[int, str, str, int]] = []
        self.connections = 0
        self._links: List[_Link] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(64)
        self._listener.settimeout(POLL)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True, name="fault-proxy")
        self._thread.start()

    def _record(self, number: int, kind: str, direction: str, at: int) -> None:
        with self._lock:
            self.faults.append((number, kind, direction, at))

    def counts(self) -> dict:
        """How many faults of each kind struck."""
        result = {kind: 0 for kind in self.kinds}
        for _, kind, _, _ in list(self.faults):
            result[kind] += 1
        return result

    def stop_faults(self) -> None:
        """No fault strikes from now on; stalled connections resume."""
        self.faults_enabled = False
        for link in list(self._links):
            link.stalled_until = 0.0

    def _accept(self) -> None:
        while not self.stopping:
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                broker = socket.create_connection(self.upstream, timeout=2.0)
            except OSError:  # the broker is down: so is the connection
                client.close()
                continue
            broker.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                link = _Link(self, self.connections, client, broker)
                self._links = [lk for lk in self._links if not lk.closed] + [link]
            link.start()

    def close(self) -> None:
        self.stopping = True
        self._listener.close()
        self._thread.join(2.0)
        for link in list(self._links):
            link.shut(linger0=False)

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
