#!/usr/bin/env python
"""Soak runs against a private mosquitto (issue 9): hours-long behaviour, not speed. Not run by CI.

    python benchmarks/soak.py connections                      # 10,000 connections for 10 min
    python benchmarks/soak.py connections --connections 2000 --minutes 1
    python benchmarks/soak.py qos1                             # 2,000 msg/s QoS 1 for 60 min
    python benchmarks/soak.py qos1 --minutes 2 --rate 1000 --json soak.json

``connections``
    N Clients (``--connections``, default 10,000) share one mqttfast ``Loop`` driven by this
    script's only thread; each connects with keep-alive 5 s (paced, ``--conn-rate`` per second:
    mosquitto's listen backlog is 100) and is then held idle for ``--minutes`` (default 10), so
    all the traffic is keep-alive: each connection pings every 2.5 s. Reported: connects,
    unexpected disconnects (must be 0), reconnects (``reconnect=True``: a drop would come back
    and be counted), this process's and mosquitto's resident memory sampled every 10 s while
    held (first, last and the least-squares slope in KiB/min), and the keep-alive ping round
    trips of a seeded sample of 100 connections (``Session.ping_sent_at`` watched after every
    loop iteration, so a figure includes up to one iteration of this loop).
``qos1``
    One publisher sends numbered QoS 1 messages at ``--rate`` per second (default 2,000) for
    ``--minutes`` (default 60) to one persistent subscriber (``clean_session=False``,
    ``reconnect=True``; the publisher too), through a mosquitto with persistence on, which is
    stopped with SIGTERM (it saves its database; ``--kill``: SIGKILL, with a save after every
    change, as tests/test_faults.py does) at 1/3 and 2/3 of the run and started again after
    ``--down`` seconds (default 3). Reported: sent, received, lost (must be 0), duplicates (QoS 1
    allows them), the longest gap between two deliveries, and for each restart the time from
    the broker accepting connections again to each client's CONNACK and to the subscriber
    having every message published before that moment; RSS as above. Both clients share one
    Loop, driven by this script's only thread, which also paces the publisher (every 5 ms).

Loopback only; bounded in time (every wait has a limit); ``--seed`` seeds the reconnect
jitter, the payload filler and the ping sample. The last line is a one-line summary with the
exact command, for the README. Exit status: 0 when the run met its target (no unexpected
disconnect and every connection up / nothing lost), 1 when it did not, 2 when it could not run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import mqttfast  # noqa: E402
from bench_scale import free_port, raise_nofile  # noqa: E402  (one copy of each)
from mqttfast.codec import IMPLEMENTATION  # noqa: E402
from mqttfast.events import Connected, Disconnected, PublishState  # noqa: E402
from mqttfast.loop import Backoff, Loop  # noqa: E402

HOST = "127.0.0.1"
SAMPLE_EVERY = 10.0  # seconds between RSS samples
_DONE = PublishState.DONE


@dataclass
class Options:
    """What one soak run does (from the command line)."""

    mode: str
    minutes: float
    seed: int = 1
    json: Optional[str] = None
    connections: int = 10_000
    conn_rate: float = 1000.0
    keepalive: int = 5
    rate: float = 2000.0
    down: float = 3.0
    kill: bool = False
    size: int = 64
    command: str = ""


# ---------------------------------------------------------------------------------- helpers


def rss_kib(pid: Optional[int] = None) -> Optional[int]:
    """VmRSS of a process (this one by default), in KiB."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def slope_per_minute(points: List[Tuple[float, float]]) -> Optional[float]:
    """Least-squares slope of (seconds, KiB) points, in KiB per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60.0


class Broker:
    """A private mosquitto on a free loopback port, which can be stopped and started again with
    the same port and database (``persistence``)."""

    def __init__(self, tmpdir: str, persistence: bool, autosave_every_change: bool) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(exe):
            raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
        self.exe = exe
        self.port = free_port()
        self.log_path = os.path.join(tmpdir, "mosquitto.log")
        self.conf_path = os.path.join(tmpdir, "mosquitto.conf")
        lines = [f"listener {self.port} {HOST}", "allow_anonymous true", "max_connections -1",
                 "max_queued_messages 0", "max_inflight_messages 0", "sys_interval 0",
                 f"log_dest file {self.log_path}", "log_type error", "log_type warning"]
        if persistence:  # max_queued_messages 0: an offline session's queue is not capped
            lines += ["persistence true", f"persistence_location {tmpdir}/",
                      "persistence_file soak.db"]
            if autosave_every_change:
                lines += ["autosave_on_changes true", "autosave_interval 1"]
        else:
            lines.append("persistence false")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.insert(0, "user root")  # else it drops to "mosquitto", who cannot write here
        with open(self.conf_path, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        self.proc: Optional[subprocess.Popen] = None
        self.version = ""

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def spawn(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", self.conf_path], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def accepts(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def start(self, timeout: float = 10.0) -> None:
        """Spawn and wait until the port accepts connections."""
        self.spawn()
        deadline = time.monotonic() + timeout
        while not self.accepts():
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited: {err.strip()} {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not accept within {timeout:g} s")
            time.sleep(0.02)
        if not self.version:
            done = subprocess.run([self.exe, "-h"], capture_output=True, text=True, timeout=10)
            self.version = (done.stdout or done.stderr).split("\n", 1)[0].strip()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def exited(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()[-chars:]
        except OSError:
            return ""


class Memory:
    """RSS of this process and of the broker, sampled every ``SAMPLE_EVERY`` seconds."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.samples: List[Tuple[float, Optional[int], Optional[int]]] = []
        self.t0 = 0.0
        self.next_at = 0.0

    def start(self, now: float) -> None:
        self.t0 = now
        self.next_at = now
        self.due(now)

    def due(self, now: float) -> None:
        if now >= self.next_at:
            self.take(now)
            self.next_at += SAMPLE_EVERY

    def take(self, now: float) -> None:
        self.samples.append((round(now - self.t0, 1), rss_kib(), rss_kib(self.broker.pid)))

    def summary(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"samples": len(self.samples), "every_s": SAMPLE_EVERY}
        for name, column in (("client", 1), ("broker", 2)):
            points: List[Tuple[float, float]] = []
            for sample in self.samples:
                value = sample[column]
                if value is not None:
                    points.append((sample[0], float(value)))
            slope = slope_per_minute(points)
            later = slope_per_minute([p for p in points if p[0] >= 60])
            out[name] = {
                "first_kib": int(points[0][1]) if points else None,
                "last_kib": int(points[-1][1]) if points else None,
                "max_kib": int(max(v for _, v in points)) if points else None,
                "slope_kib_per_min": round(slope, 2) if slope is not None else None,
                "slope_after_1_min": round(later, 2) if later is not None else None,
            }
        out["series"] = self.samples
        return out


def _mib(kib: Optional[int]) -> str:
    return f"{kib / 1024:.1f} MiB" if kib is not None else "n/a"


def _memory_text(memory: Dict[str, Any], who: str) -> str:
    m = memory[who]
    slope = m["slope_kib_per_min"]
    return (f"{_mib(m['first_kib'])} -> {_mib(m['last_kib'])} "
            f"(slope {slope:+.1f} KiB/min)" if slope is not None else
            f"{_mib(m['first_kib'])} -> {_mib(m['last_kib'])}")


# ---------------------------------------------------------------------------------- connections

class PingWatch:
    """Keep-alive round trips of a few connections: a PINGREQ's time is its session's
    ``ping_sent_at``, its answer the moment that is cleared (seen after a loop iteration).
    A fixed histogram (0.1 ms buckets to 1 s) so watching does not grow memory."""

    BUCKET = 1e-4
    BUCKETS = 10_000

    def __init__(self, clients: List[mqttfast.Client]) -> None:
        self.sessions = [c.session for c in clients]
        self.pending: List[Optional[float]] = [None] * len(clients)
        self.hist = [0] * (self.BUCKETS + 1)
        self.count = 0
        self.max_s = 0.0

    def check(self, now: float) -> None:
        pending = self.pending
        for i, session in enumerate(self.sessions):
            sent = session.ping_sent_at
            seen = pending[i]
            if sent == seen:
                continue
            if seen is not None and sent is None:
                rtt = now - seen
                self.hist[min(self.BUCKETS, int(rtt / self.BUCKET))] += 1
                self.count += 1
                if rtt > self.max_s:
                    self.max_s = rtt
            pending[i] = sent

    def percentile(self, q: float) -> Optional[float]:
        if not self.count:
            return None
        rank = q * self.count
        total = 0
        for i, n in enumerate(self.hist):
            total += n
            if total >= rank:
                return (i + 1) * self.BUCKET
        return self.max_s

    def summary(self) -> Dict[str, Any]:
        def ms(v: Optional[float]) -> Optional[float]:
            return round(v * 1000, 2) if v is not None else None

        return {"watched": len(self.sessions), "round_trips": self.count,
                "p50_ms": ms(self.percentile(0.5)), "p99_ms": ms(self.percentile(0.99)),
                "max_ms": ms(self.max_s if self.count else None),
                "note": "upper bounds: includes up to one iteration of the shared loop"}


class Fleet:
    """What the connections' callbacks tell: connects, reconnects and unexpected disconnects."""

    def __init__(self) -> None:
        self.connects = 0
        self.reconnects = 0
        self.unexpected = 0
        self.reasons: Counter = Counter()
        self.holding = True  # False once this script starts closing the connections
        self.first_unexpected: Optional[float] = None

    def watch(self, client: mqttfast.Client) -> None:
        state = {"connected_before": False}

        def on_connect(event: Connected) -> None:
            if state["connected_before"]:
                self.reconnects += 1
            state["connected_before"] = True
            self.connects += 1

        def on_disconnect(event: Disconnected) -> None:
            if self.holding:
                self.unexpected += 1
                self.reasons[event.reason[:120]] += 1
                if self.first_unexpected is None:
                    self.first_unexpected = time.monotonic()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect


def run_connections(opts: Options, broker: Broker) -> Tuple[Dict[str, Any], bool]:
    rng = random.Random(opts.seed)
    loop = Loop()
    fleet = Fleet()
    memory = Memory(broker)
    clients: List[mqttfast.Client] = []
    failed: Counter = Counter()
    backoff = Backoff()
    n = opts.connections
    t0 = time.monotonic()
    connect_deadline = t0 + n / opts.conn_rate * 2 + 60
    for i in range(n):
        due = t0 + i / opts.conn_rate
        while True:  # pace, driving the loop (keep-alive of those already up) meanwhile
            left = due - time.monotonic()
            if left <= 0:
                break
            loop.run_once(left)
        if time.monotonic() > connect_deadline:
            failed["connect phase over its time limit"] += n - i
            break
        client = mqttfast.Client(f"soak-{opts.seed}-{i}", reconnect=backoff, loop=loop)
        fleet.watch(client)
        try:
            client.connect(HOST, broker.port, keepalive=opts.keepalive, timeout=15)
            clients.append(client)
        except mqttfast.MQTTError as exc:
            failed[str(exc)[:120]] += 1
    t_connected = time.monotonic()
    connect_seconds = t_connected - t0
    up = sum(c.is_connected for c in clients)
    print(f"connections: {up:,} of {n:,} up in {connect_seconds:.1f} s "
          f"({up / connect_seconds:,.0f}/s); holding for {opts.minutes:g} min", flush=True)
    pings = PingWatch(rng.sample(clients, min(100, len(clients))))
    hold_start = time.monotonic()
    hold_end = hold_start + opts.minutes * 60
    memory.start(hold_start)
    next_report = hold_start + 60
    now = hold_start
    while now < hold_end:
        loop.run_once(min(0.5, hold_end - now))
        now = time.monotonic()
        pings.check(now)
        memory.due(now)
        if now >= next_report:
            next_report += 60
            print(f"  {(now - hold_start) / 60:4.1f} min: {sum(c.is_connected for c in clients):,}"
                  f" connected, {fleet.unexpected} unexpected disconnects, "
                  f"RSS {_mib(rss_kib())}", flush=True)
    held_seconds = time.monotonic() - hold_start
    connected_at_end = sum(c.is_connected for c in clients)
    memory.take(time.monotonic())  # a last sample at the end of the hold
    fleet.holding = False
    t_close = time.monotonic()
    for client in clients:
        client.disconnect(timeout=2.0)
    loop.close()
    close_seconds = time.monotonic() - t_close
    mem = memory.summary()
    ok = (connected_at_end == n and fleet.unexpected == 0 and not failed)
    result = {
        "connections": n, "keepalive_s": opts.keepalive, "conn_rate_target": opts.conn_rate,
        "connected_initially": up, "connect_failures": sum(failed.values()),
        "connect_failure_reasons": dict(failed),
        "connect_seconds": round(connect_seconds, 2),
        "connect_rate": round(up / connect_seconds, 1) if connect_seconds else None,
        "held_minutes": round(held_seconds / 60, 2), "connected_at_end": connected_at_end,
        "connects": fleet.connects, "reconnects": fleet.reconnects,
        "unexpected_disconnects": fleet.unexpected,
        "unexpected_disconnect_reasons": dict(fleet.reasons),
        "close_seconds": round(close_seconds, 2),
        "memory": mem, "pings": pings.summary(), "ok": ok,
    }
    p = pings.summary()
    result["summary"] = (
        f"soak connections: {n:,} connections (keep-alive {opts.keepalive} s, one Loop) held "
        f"{held_seconds / 60:.1f} min: {connected_at_end:,} connected at the end, "
        f"{fleet.unexpected} unexpected disconnects, {fleet.reconnects} reconnects; RSS "
        f"{_memory_text(mem, 'client')}, mosquitto {_memory_text(mem, 'broker')}; "
        f"ping RTT p50 {p['p50_ms']} ms p99 {p['p99_ms']} ms ({p['round_trips']:,} round trips "
        f"of {p['watched']} connections)"
        f" -- {'ok' if ok else 'FAILED'}")
    return result, ok


# ---------------------------------------------------------------------------------- qos1

class Tally:
    """The subscriber's side: which numbers arrived, how often, and the longest silence."""

    def __init__(self, capacity: int) -> None:
        self.seen = bytearray(capacity)  # deliveries per number (capped at 255)
        self.received = 0
        self.unique = 0
        self.duplicates = 0
        self.foreign = 0
        self.last_at: Optional[float] = None
        self.longest_gap = 0.0
        self.longest_gap_at = 0.0  # when that gap ended, monotonic
        self.prefix = 0  # every number below this has arrived

    def on_message(self, message: Any) -> None:
        now = time.monotonic()
        try:
            number = int(message.payload[:10])
        except ValueError:
            self.foreign += 1
            return
        if not 0 <= number < len(self.seen):
            self.foreign += 1
            return
        self.received += 1
        count = self.seen[number]
        if count:
            self.duplicates += 1
        else:
            self.unique += 1
        if count < 255:
            self.seen[number] = count + 1
        if self.last_at is not None and now - self.last_at > self.longest_gap:
            self.longest_gap = now - self.last_at
            self.longest_gap_at = now
        self.last_at = now

    def advance(self, limit: int) -> int:
        seen = self.seen
        prefix = self.prefix
        while prefix < limit and seen[prefix]:
            prefix += 1
        self.prefix = prefix
        return prefix


class Publisher:
    """Numbered QoS 1 messages at a steady rate; completions counted, handles not kept."""

    def __init__(self, client: mqttfast.Client, topic: str, rate: float, size: int,
                 filler: bytes) -> None:
        self.client = client
        self.topic = topic
        self.rate = rate
        self.size = size
        self.filler = filler
        self.sent = 0
        self.done = 0
        self.failed = 0
        self.errors: Counter = Counter()
        self.t0 = 0.0
        self.largest_batch = 0  # most messages due at once: how far the pacing fell behind
        client.on_publish = self.on_publish

    def on_publish(self, record: Any) -> None:
        if record.state == _DONE:
            self.done += 1
        else:
            self.failed += 1
            self.errors[str(record.error)[:120]] += 1

    def pace(self, now: float, limit: int) -> None:
        """Publish what is due by ``now`` (at most ``limit`` messages in all)."""
        due = min(limit, int((now - self.t0) * self.rate))
        client, topic, filler = self.client, self.topic, self.filler
        for number in range(self.sent, due):
            client.publish(topic, b"%010d" % number + filler, qos=1)
        if due > self.sent:
            if due - self.sent > self.largest_batch:
                self.largest_batch = due - self.sent
            self.sent = due


@dataclass
class Restart:
    """One broker restart and how the clients came back from it."""

    at_s: float  # when the signal was sent, seconds into the run
    signal: str
    exit_s: Optional[float] = None  # signal to process gone
    down_s: Optional[float] = None  # signal to the port accepting again
    sub_connack_s: Optional[float] = None  # port accepting to the subscriber's CONNACK
    pub_connack_s: Optional[float] = None
    session_present: Optional[bool] = None  # the subscriber's, on that CONNACK
    caught_up_s: Optional[float] = None  # port accepting to: all sent before then received
    sent_before_up: int = 0
    # monotonic times, for the bookkeeping only
    t_signal: float = field(default=0.0, repr=False)
    t_exit: Optional[float] = field(default=None, repr=False)
    t_up: Optional[float] = field(default=None, repr=False)
    t_spawn: Optional[float] = field(default=None, repr=False)

    def public(self) -> Dict[str, Any]:
        out = asdict(self)
        for key in ("t_signal", "t_exit", "t_up", "t_spawn"):
            out.pop(key)
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


class Restarter:
    """Stops the broker at the planned moments and starts it again ``down`` seconds after it
    exited; steps without blocking, so the loop keeps running throughout."""

    def __init__(self, broker: Broker, plan: List[float], down: float, kill: bool) -> None:
        self.broker = broker
        self.plan = list(plan)  # monotonic times to stop the broker
        self.down = down
        self.sig = signal.SIGKILL if kill else signal.SIGTERM
        self.done: List[Restart] = []
        self.current: Optional[Restart] = None
        self.next_probe = 0.0

    def step(self, now: float, t0: float, sent: int) -> None:
        cur = self.current
        if cur is None:
            if self.plan and now >= self.plan[0]:
                self.plan.pop(0)
                cur = self.current = Restart(round(now - t0, 1), self.sig.name, t_signal=now)
                self.broker.signal(self.sig)
            return
        if cur.t_exit is None:
            if self.broker.exited():
                cur.t_exit = now
                cur.exit_s = now - cur.t_signal
            elif now - cur.t_signal > 30:
                self.broker.signal(signal.SIGKILL)  # a bounded wait even for a stuck broker
            return
        if cur.t_spawn is None:
            if now >= cur.t_exit + self.down:
                self.broker.spawn()
                cur.t_spawn = now
            return
        if cur.t_up is not None:
            if now - cur.t_up > 60:  # never caught up (a message lost): give up on this one
                self.done.append(cur)
                self.current = None
            return
        if now >= self.next_probe:
            self.next_probe = now + 0.02
            if self.broker.accepts():
                cur.t_up = now
                cur.down_s = now - cur.t_signal
                cur.sent_before_up = sent
            elif self.broker.exited():
                raise RuntimeError(f"mosquitto did not restart: {self.broker.log_tail()}")

    def on_connect(self, who: str, event: Connected) -> None:
        cur = self.current
        if cur is None or cur.t_exit is None:
            return
        now = time.monotonic()
        base = cur.t_up if cur.t_up is not None else now  # before our probe saw it up: ~0
        if who == "sub" and cur.sub_connack_s is None:
            cur.sub_connack_s = max(0.0, now - base)
            cur.session_present = event.session_present
        elif who == "pub" and cur.pub_connack_s is None:
            cur.pub_connack_s = max(0.0, now - base)

    def caught_up(self, now: float, prefix: int) -> None:
        cur = self.current
        if cur is None or cur.t_up is None or prefix < cur.sent_before_up:
            return
        if cur.sub_connack_s is None or cur.pub_connack_s is None:
            return
        cur.caught_up_s = now - cur.t_up
        self.done.append(cur)
        self.current = None


def run_qos1(opts: Options, broker: Broker) -> Tuple[Dict[str, Any], bool]:
    rng = random.Random(opts.seed)
    seconds = opts.minutes * 60
    total = round(opts.rate * seconds)
    filler = bytes(rng.getrandbits(8) for _ in range(max(0, opts.size - 10)))
    topic = f"soak/qos1/{opts.seed}"
    tally = Tally(total)
    memory = Memory(broker)
    loop = Loop()
    restarter = Restarter(broker, [], opts.down, opts.kill)
    sub = mqttfast.Client(f"soak-sub-{opts.seed}", clean_session=False, reconnect=True,
                          loop=loop)
    sub.on_message = tally.on_message
    sub.on_connect = lambda event: restarter.on_connect("sub", event)
    sub.connect(HOST, broker.port, keepalive=opts.keepalive, timeout=10)
    if not sub.subscribe(topic, 1).wait(10):
        raise RuntimeError("the subscription was not acknowledged")
    pub_client = mqttfast.Client(f"soak-pub-{opts.seed}", clean_session=False, reconnect=True,
                                 loop=loop)
    pub_client.on_connect = lambda event: restarter.on_connect("pub", event)
    pub_client.connect(HOST, broker.port, keepalive=opts.keepalive, timeout=10)
    pub = Publisher(pub_client, topic, opts.rate, opts.size, filler)
    t0 = time.monotonic()
    pub.t0 = t0
    end = t0 + seconds
    restarter.plan = [t0 + seconds / 3, t0 + seconds * 2 / 3]
    memory.start(t0)
    next_report = t0 + 60
    print(f"qos1: {opts.rate:,.0f} msg/s for {opts.minutes:g} min, {restarter.sig.name} at 1/3 "
          f"and 2/3, {opts.down:g} s down", flush=True)
    now = t0
    while now < end:
        pub.pace(now, total)
        loop.run_once(0.005)
        now = time.monotonic()
        restarter.step(now, t0, pub.sent)
        if restarter.current is not None:
            restarter.caught_up(now, tally.advance(restarter.current.sent_before_up))
        memory.due(now)
        if now >= next_report:
            next_report += 60
            print(f"  {(now - t0) / 60:4.1f} min: sent {pub.sent:,}, acknowledged {pub.done:,}, "
                  f"received {tally.unique:,} (+{tally.duplicates:,} dup), "
                  f"RSS {_mib(rss_kib())}", flush=True)
    pub.pace(end, total)  # the last ones due: exactly rate x duration in all
    publish_seconds = time.monotonic() - t0
    # Drain: every handle done and every message in, or 60 s (also finishes a late restart).
    drain_end = time.monotonic() + 60
    while time.monotonic() < drain_end:
        now = time.monotonic()
        restarter.step(now, t0, pub.sent)
        if restarter.current is not None:
            restarter.caught_up(now, tally.advance(restarter.current.sent_before_up))
        elif pub.done + pub.failed >= pub.sent and tally.unique >= pub.sent:
            break
        loop.run_once(0.01)
    loop.run_once(0.2)  # room for a late duplicate
    drain_seconds = time.monotonic() - t0 - publish_seconds
    memory.take(time.monotonic())
    lost = pub.sent - tally.unique
    restarts = [r.public() for r in restarter.done + ([restarter.current]
                                                      if restarter.current else [])]
    for client in (pub_client, sub):
        client.disconnect(timeout=5.0)
    loop.close()
    mem = memory.summary()
    ok = lost == 0 and tally.foreign == 0 and len(restarter.done) == 2
    result = {
        "rate_target": opts.rate, "minutes": opts.minutes, "payload_bytes": opts.size,
        "signal": restarter.sig.name, "down_s": opts.down,
        "sent": pub.sent, "acknowledged": pub.done, "publish_failed": pub.failed,
        "publish_errors": dict(pub.errors),
        "rate_achieved": round(pub.sent / publish_seconds, 1),
        "largest_batch": pub.largest_batch,
        "received": tally.received, "unique": tally.unique, "lost": lost,
        "duplicates": tally.duplicates, "foreign": tally.foreign,
        "longest_gap_s": round(tally.longest_gap, 3),
        "longest_gap_ended_at_s": round(tally.longest_gap_at - t0, 1) if tally.last_at else None,
        "drain_seconds": round(drain_seconds, 2), "restarts": restarts,
        "memory": mem, "ok": ok,
    }

    def secs(v: Any) -> str:
        return f"{v:.2f} s" if v is not None else "n/a"

    back = "; ".join(f"#{k + 1}: CONNACK sub {secs(r['sub_connack_s'])} pub "
                     f"{secs(r['pub_connack_s'])}, caught up {secs(r['caught_up_s'])}"
                     for k, r in enumerate(restarts))
    result["summary"] = (
        f"soak qos1: {opts.rate:,.0f} msg/s for {opts.minutes:g} min, {len(restarts)} "
        f"{restarter.sig.name} restarts ({opts.down:g} s down): sent {pub.sent:,}, received "
        f"{tally.received:,}, lost {lost:,}, duplicates {tally.duplicates:,}, longest gap "
        f"{tally.longest_gap:.2f} s; after the broker was back: {back}; RSS "
        f"{_memory_text(mem, 'client')}, mosquitto {_memory_text(mem, 'broker')}"
        f" -- {'ok' if ok else 'FAILED'}")
    return result, ok


# ---------------------------------------------------------------------------------- main

def parse(argv: List[str]) -> Options:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    modes = ap.add_subparsers(dest="mode", required=True)
    conn = modes.add_parser("connections", help="many idle connections held with keep-alive")
    conn.add_argument("--connections", type=int, default=10_000)
    conn.add_argument("--conn-rate", type=float, default=1000.0, help="connects per second")
    conn.add_argument("--minutes", type=float, default=10.0, help="how long they are held")
    qos1 = modes.add_parser("qos1", help="steady QoS 1 through two broker restarts")
    qos1.add_argument("--rate", type=float, default=2000.0, help="messages per second")
    qos1.add_argument("--minutes", type=float, default=60.0)
    qos1.add_argument("--down", type=float, default=3.0,
                      help="seconds the broker stays down at each restart")
    qos1.add_argument("--kill", action="store_true",
                      help="SIGKILL instead of SIGTERM (the broker saves after every change)")
    qos1.add_argument("--size", type=int, default=64, help="payload bytes (>= 10)")
    for sub in (conn, qos1):
        sub.add_argument("--keepalive", type=int, default=5)
        sub.add_argument("--seed", type=int, default=1)
        sub.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    opts = Options(mode=args.mode, minutes=args.minutes, seed=args.seed, json=args.json,
                   keepalive=args.keepalive,
                   command=shlex.join(["python", "benchmarks/soak.py", *argv]))
    if args.mode == "connections":
        opts.connections, opts.conn_rate = args.connections, args.conn_rate
    else:
        opts.rate, opts.down, opts.kill, opts.size = args.rate, args.down, args.kill, args.size
    if opts.minutes <= 0 or opts.rate <= 0 or opts.conn_rate <= 0 or opts.connections <= 0:
        ap.error("--minutes, --rate, --conn-rate and --connections must be positive")
    return opts


def main(argv: Optional[List[str]] = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    random.seed(opts.seed)  # the reconnect jitter (mqttfast.loop.Backoff uses ``random``)
    soft = raise_nofile()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if opts.mode == "connections" and soft < opts.connections + 100:
        print(f"the open-file limit is {soft} (hard {hard}): {opts.connections:,} connections "
              f"need about {opts.connections + 100:,}; raise it (ulimit -Hn as root) or pass "
              f"--connections", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        broker = Broker(tmp, persistence=opts.mode == "qos1",
                        autosave_every_change=opts.kill)
        try:
            broker.start()
            if opts.mode == "connections":
                result, ok = run_connections(opts, broker)
            else:
                result, ok = run_qos1(opts, broker)
        except (RuntimeError, mqttfast.MQTTError) as exc:
            print(f"soak {opts.mode}: could not run: {exc}", file=sys.stderr)
            return 2
        finally:
            broker.stop()
    result = {"mode": opts.mode, "command": opts.command, "options": asdict(opts),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform(), "nofile": [soft, hard],
                          "mosquitto": broker.version,
                          "codec": IMPLEMENTATION, "mqttfast": mqttfast.__version__},
              **result}
    print(json.dumps({k: v for k, v in result.items() if k not in ("memory", "summary")},
                     indent=1, default=str))
    mem = result["memory"]
    print("RSS series (s, client KiB, broker KiB):",
          " ".join(f"{t:g}:{a}/{b}" for t, a, b in mem["series"]))
    if opts.json:
        with open(opts.json, "w") as handle:
            json.dump(result, handle, indent=2, default=str)
        print(f"wrote {opts.json}")
    print(f"{result['summary']}  [{opts.command}]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
